"""The motion detector's internal constants, each a documented trade-off (pure data).

These are not user settings (those are ``MotionSettings``: threshold, min_area, min_frames, …);
they were chosen with ``camrec bench motion`` on labelled footage and on perturbed copies of it
(added noise, flicker, shake, drift, rain), looking for values that hold up everywhere rather
than the best figure on any one sequence. Times are in seconds, so the detector behaves the same
at any frame rate; sizes are pixels of a ``reference_width``-wide frame.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MotionTuning:
    # -- resolution
    # Frames wider than this are first scaled down to it (area averaging, which also halves the
    # noise): detection needs no more detail, and the cost stays ~1 ms whatever detect_width is.
    work_width: int = 320
    reference_width: int = 320

    # -- background learning
    # Quiet pixels follow the scene with this time constant. Shorter absorbs shadows and drift
    # sooner; longer keeps the background cleaner of noise and of slow walkers.
    background_tau_s: float = 5.0
    # Present regions that move (people): long, so a person working at a desk for minutes is not
    # absorbed; a parked car is absorbed by ``still_tau_s`` once it stops moving.
    foreground_tau_s: float = 40.0
    # Present regions with no movement in them (parked car, moved chair, ghost, a patch the
    # light compensation got wrong). Shorter re-learns the scene sooner after something was
    # moved; longer remembers a person who sits still, so they count again as soon as they move.
    still_tau_s: float = 20.0
    # After a start or reset: learn only (every frame weighing the same), report nothing. Longer
    # gives the dynamic-background model more to go on; shorter misses less after a reconnect.
    warmup_s: float = 2.0
    # After the background was re-learnt because of an unexplained global change.
    relearn_warmup_s: float = 0.5

    # -- presence (frame vs background)
    # Gaussian blur size. Larger averages away more noise but smears small or distant objects.
    blur_px: float = 5.0
    # Each pixel is compared with the background's min..max in this neighbourhood: camera shake
    # and swaying edges of about half of it are not change. Larger tolerates more jitter but
    # loses low-contrast edges.
    tolerance_px: float = 3.0
    # Opening: blobs narrower than this vanish (noise, rain, snow, compression blocks).
    open_px: float = 3.0
    # Closing: gaps narrower than this inside one object are filled.
    close_px: float = 5.0
    # Margin around present objects that learns like them, so their low-contrast edges are not
    # eaten into the background while they stand still.
    protect_px: float = 5.0
    # Presence flips are averaged over this long. Longer remembers dynamic areas for longer
    # (fewer alarms from a gust after a calm spell) but desensitizes a spot for longer after a
    # person moved about there.
    blink_tau_s: float = 10.0
    # Flips per second that double a pixel's threshold. Lower suppresses trees, water and noise
    # more firmly; higher keeps more sensitivity where people move about a lot.
    blink_rate_ref: float = 0.5

    # -- movement (change of the residual over time)
    # Movement is a change of the residual over this interval (the daemon's 1/detect_fps by
    # default): long enough for slow walkers to move, short enough to stay local in time.
    motion_gap_s: float = 0.2
    # Movement threshold as a fraction of ``threshold``. Lower sees the small movements of someone
    # sitting at a desk, and people in dim light; the region must be present as well, so this
    # can be lower than the presence threshold without letting noise through.
    motion_threshold: float = 0.6
    # A region that moved keeps counting as moving for this long: bridges brief stillness (the
    # decision's hold comes on top); longer also keeps alarms on a just-moved chair going longer
    # and lets rain accumulate into "movement".
    motion_memory_s: float = 0.5
    # A region counts only if something was present within this distance in the previous frame
    # (rain and one-frame glitches do not persist; people and cars do).
    persist_px: float = 4
    # Moving regions smaller than this share of min_area are specks and never count (rain, snow,
    # leaves, insects): they must not add up to one moving thing. Higher ignores more and
    # bigger debris; lower keeps distant objects that are only a fraction of min_area.
    speck_share: float = 0.25
    # Present regions are judged as wholes on a grid of cells this size.
    blob_cell_px: float = 4.0

    # -- decision
    # Quiet time before motion turns off. Longer bridges pauses and occlusions; shorter ends
    # events (and clips) sooner after the scene calms down.
    hold_s: float = 1.0

    # -- light
    # A global mapping that explains at least this fraction of the picture is trusted as light.
    light_inliers: float = 0.5
    # A trusted mapping moving luma by at least this fraction of ``threshold`` on average, or
    # the gain by ``lighting_log_gain`` (natural log; 0.22 = 25 %), is a step in the light:
    # reported, and screens/lamps that did not follow it are re-learnt.
    lighting_shift: float = 0.5
    lighting_log_gain: float = 0.22
    # A gain step this large (0.69 = twice or half as bright) is not compensated: the background
    # is taken from a remembered lighting state or from the frame (see camrec.motion.light).
    relearn_log_gain: float = 0.69
    # A mapping that moves no typical pixel by this much (luma) is left to the background's own
    # learning: applying a fit's small bias on every frame would compound.
    compensate_min_luma: float = 2.0
    # Width of the grid the photometric model is fitted on (~1-2k samples).
    light_grid_width: int = 48
    # Lighting states remembered (a background each), how long a state must have lasted to be
    # remembered, and how well a new frame's light must match a stored state to bring it back.
    light_states: int = 4
    light_settle_s: float = 5.0
    recall_inliers: float = 0.7
    # If at least ``lighting_area`` of the valid picture is present after an unexplained change,
    # or ``spread_area`` of it spread over ``spread_cells`` of a coarse grid, it is light no
    # model explained (IR cut-over) or a moved camera, not motion: re-learn.
    lighting_area: float = 0.6
    spread_area: float = 0.25
    spread_cells: float = 0.85
    spread_grid_width: int = 12
    spread_cell_min: float = 0.05

    # -- output
    # At most this many boxes per frame, largest first; boxes closer than merge_px are merged.
    max_boxes: int = 32
    merge_px: float = 8.0
    # A timestamp step larger than this many nominal frame intervals (or not positive) is not
    # trusted for the learning rate; the nominal 1/detect_fps is used instead.
    max_step_frames: float = 10.0
