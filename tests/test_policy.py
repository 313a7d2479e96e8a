"""The clip state machine, driven with plain numbers (no clock, no I/O)."""

from __future__ import annotations

from camrec.record.policy import Action, ClipPolicy


def drive(policy: ClipPolicy, motion: set[int], seconds: int = 60, fps: int = 10, gop: int = 10):
    """Feeds `seconds` of packets; motion is on during the listed whole seconds. Returns the
    (action, t) decisions, opening/closing clips the way the recorder does."""
    decisions = []
    for i in range(seconds * fps):
        t = i / fps
        if i % (fps // 5) == 0:  # the detector runs at 5 fps
            policy.motion(t, int(t) in motion)
        d = policy.packet(t, keyframe=i % gop == 0)
        if d is None:
            continue
        decisions.append((d.action, round(t, 2), round(d.start_from, 2)))
        if d.action is Action.START:
            policy.opened(max(d.start_from, 0.0))
        elif d.action is Action.STOP:
            policy.closed(t)
        elif d.action is Action.SPLIT:
            policy.closed(t)
            policy.opened(t)
    return decisions


def test_idle_without_motion():
    assert drive(ClipPolicy(5, 10, 300), motion=set()) == []


def test_one_event_pre_and_post_roll():
    d = drive(ClipPolicy(pre_roll=3, post_roll=4, max_clip=300), motion={20, 21, 22})
    assert d[0] == (Action.START, 20.0, 17.0)  # asks for 3 s before the first motion frame
    # last motion frame at 22.8 s; post-roll of 4 s ends the clip at 26.8 s
    assert d[1][0] is Action.STOP and d[1][1] == 26.8
    assert len(d) == 2


def test_motion_during_post_roll_extends_the_clip():
    d = drive(ClipPolicy(pre_roll=2, post_roll=5, max_clip=300), motion={10, 13})
    assert [a for a, *_ in d] == [Action.START, Action.STOP]
    assert d[1][1] == 18.8


def test_separate_events_do_not_overlap():
    d = drive(ClipPolicy(pre_roll=5, post_roll=2, max_clip=300), motion={10, 16})
    starts = [x for x in d if x[0] is Action.START]
    stops = [x for x in d if x[0] is Action.STOP]
    assert len(starts) == 2 and len(stops) == 2
    first_end = stops[0][1]
    assert starts[1][2] >= first_end  # the second pre-roll is clipped at the first clip's end


def test_long_motion_is_split_at_keyframes():
    d = drive(ClipPolicy(pre_roll=0, post_roll=1, max_clip=10), motion=set(range(5, 40)))
    splits = [t for a, t, _ in d if a is Action.SPLIT]
    assert splits == [15.0, 25.0, 35.0]
    assert d[-1][0] is Action.STOP


def test_reset_forgets_motion():
    p = ClipPolicy(1, 1, 300)
    p.motion(5.0, True)
    p.reset()
    assert p.packet(5.1, True) is None
