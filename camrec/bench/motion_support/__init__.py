"""Helpers of `camrec bench motion`: labelled sequences, scoring and baseline detectors.

A package of its own because `camrec bench` imports every module directly under camrec/bench/ to
build the command line; the numpy/OpenCV imports here load only when the benchmark runs.
"""
