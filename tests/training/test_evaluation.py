"""training/evaluation.py: invalid_action_kinds on a hand-made episode."""
from jerp_jax.training.evaluation import invalid_action_kinds
from jerp_jax.agent.episode import Episode, Step

_ADMISSIBLE = ["go to fridge 1", "go to toilet 1", "look"]


def _step(action, valid):
  if action is None:  # no <action> block: a format error, the env gets the invalid marker
    return Step("obs", _ADMISSIBLE, "<think>x</think>", "<invalid>", False, well_formed=False)
  return Step("obs", _ADMISSIBLE, f"<think>x</think><action>{action}</action>", action, valid)


def test_each_kind_and_the_repeats():
  steps = [_step("go to toilet 1", True),
           _step("go to toilet 1", False),     # already there
           _step("go to sidetable 1", False),  # the room has none
           _step("take soap 1 from toilet 1", False),
           _step("take soap 1 from toilet 1", False),  # the same inadmissible action again
           _step(None, False),
           _step("cool egg 1", False),
           _step("go to fridge 1", True)]
  kinds = invalid_action_kinds([Episode("t/0", "pick", "g", steps, reward=0.0, won=False)])
  assert kinds == {"steps": 8, "invalid": 6, "go_to_current_place": 1, "go_to_missing_receptacle": 1,
                   "take_absent_object": 2, "repeats_previous_invalid": 1, "format_error": 1,
                   "other_verb:cool": 1}
