"""The clip state machine: when a clip starts, continues, splits and ends. Pure: no I/O, no clock.

All times are camera-clock seconds (packet arrival times, `MediaPacket.arrival`), the one clock
that the main stream and a detection sub-stream share.

    idle ──motion──▶ recording ──no motion for post_roll──▶ idle
                      │  └──clip longer than max_clip, at a keyframe──▶ split (close + open at once)

A clip opens `pre_roll` seconds before the first motion frame (the recorder finds the keyframe at or
before that instant in its ring of compressed packets) and closes `post_roll` seconds after the last
motion frame. Results from the detector arrive late (decode + hysteresis); that is fine because
every decision is made against the packets' own times, not against "now".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Action(Enum):
    START = "start"
    STOP = "stop"
    SPLIT = "split"


@dataclass(frozen=True)
class Decision:
    action: Action
    start_from: float = 0.0  # START: the earliest camera time the clip should cover


class ClipPolicy:
    def __init__(self, pre_roll: float, post_roll: float, max_clip: float) -> None:
        self.pre_roll = pre_roll
        self.post_roll = post_roll
        self.max_clip = max_clip
        self.recording = False
        self.clip_start = 0.0
        self.last_clip_end = float("-inf")
        self._first_motion: float | None = None  # motion seen while idle, not acted on yet
        self._last_motion = float("-inf")
        self._motion_now = False

    def motion(self, t: float, active: bool) -> None:
        """A detector decision for the frame at camera time t."""
        self._motion_now = active
        if not active:
            return
        self._last_motion = max(self._last_motion, t)
        if not self.recording and self._first_motion is None:
            self._first_motion = t

    def packet(self, t: float, keyframe: bool) -> Decision | None:
        """Called before each main-stream packet at camera time t is stored; says what to do first."""
        if not self.recording:
            if self._first_motion is None:
                return None
            start_from = max(self._first_motion - self.pre_roll, self.last_clip_end)
            self._first_motion = None
            return Decision(Action.START, start_from)
        if self.motion_over(t):
            return Decision(Action.STOP)
        if keyframe and t - self.clip_start >= self.max_clip:
            return Decision(Action.SPLIT)
        return None

    def motion_over(self, t: float) -> bool:
        """True when, at camera time t, the last motion is older than the post-roll."""
        return not self._motion_now and t >= self._last_motion + self.post_roll

    def opened(self, t: float) -> None:
        """The recorder opened a clip whose first packet is at camera time t."""
        self.recording = True
        self.clip_start = t

    def closed(self, t_end: float) -> None:
        """The recorder closed the clip; its last packet ends at camera time t_end."""
        self.recording = False
        self.last_clip_end = t_end
        self._first_motion = None

    def reset(self) -> None:
        """The camera went away: forget motion state (the recorder has closed any clip)."""
        self._motion_now = False
        self._first_motion = None
        self._last_motion = float("-inf")
