"""Motion detection. The pure core (detector, model, light, stages, tuning) turns grey frames into
decisions and imports only numpy/OpenCV and the foundation modules; worker (the detection thread
that decodes packets) and input (frames from files and cameras, shared by `camrec detect` and the
motion bench) are the shell around it and may also import sources."""
