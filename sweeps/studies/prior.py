"""Issue 16, items 3-4: does an adaptive gamma add anything to logit adjustment (LA, Menon et al. 2021)?

Every arm but the class-balanced baselines trains the logit-adjusted loss, the focal loss of
``logits + log(prior)`` (research.train's ``loss="logit_adjusted"``, tau 1); they differ only in the focal term's
gamma. ``baseline=logit_adjusted`` is LA alone (gamma 0, the reference of research/prior.py); ``la+gamma=<g>`` fixes
gamma at 0.5, 1, 2, 3, 5 (``loss_kwargs.gamma``); ``la+gamma=tpe`` tunes it in [0, 5]; ``la+policy=<name>`` lets a
policy drive it from research.train's starting gamma 2 with the policy's defaults, ``la+policy=<name>+tpe`` tunes
the policy over its search space; ``baseline=cb_ce`` and ``baseline=cb_focal`` are class-balanced cross-entropy and
focal loss (Cui et al. 2019, beta 0.9999, focal gamma 2), the other prior-based correction.

Seeds 2000-2009: fresh, no earlier study used them. Every tuned arm gets the same budget, ``TRIALS`` = 4 TPE trials
per seed (the first two random, Optuna's start-up), on the validation headline metric; the grid costs 6 runs per
seed with LA alone (gamma 0). No pruning (the engine's default): every trial trains to its end.

What was cut, and why. Run times measured with one torch thread on this 2-core machine (research.train, one run,
LA): digits-lt 0.2-1 s, gauss-lt 0.5-0.8 s, mnist1d-lt 5-9 s, seg-toy 5.5-6 s. The full design (LA, grid, gamma=tpe,
the 12 softmax policies that need no held-out data at their defaults and the 10 of them with a search space tuned,
CB CE/focal) is 64 runs per seed, 640 per study: about 6 minutes on digits-lt and gauss-lt but about an hour each
on mnist1d-lt and seg-toy, against a budget of about 75 minutes of one core for all the studies. So, in the
first round:

* digits-lt and gauss-lt (``<dataset>-prior``) and digits-lt at 3x epochs (``digits-lt-prior-long``, 30 epochs)
  run the full design;
* mnist1d-lt and seg-toy (``<dataset>-prior``) and gauss-lt at 3x epochs (``gauss-lt-prior-long``, 180 epochs) run
  LA, the grid, gamma=tpe, CB CE/focal, FLSD-53 at its defaults (the pre-registered policy) and the two policies
  that ranked best among these policies in the development study of the data set (sweeps/results/leaderboard.csv,
  focal loss, 5 seeds), at their defaults and tuned: gauss-lt automated and cyclical, mnist1d-lt automated and
  exponential, seg-toy exponential and linear; 23 runs per seed;
* mnist1d-lt and seg-toy at 3x epochs are not run (about 45 minutes each even with the reduced arms; the second
  round ran them at 2x);
* the learned controllers (hypergradient, gammanet, bandit) are left out everywhere: they meta-train on held-out
  labelled batches, so a fair comparison has every arm hold out the same slice (research protocol v2), which
  changes the LA reference itself, and they cost 2-5 times a plain run (the second round ran them so).

Completed in a second round (2026-12-04, the same seeds; the studies above unchanged, since a stored study's arms
are fixed by its manifest):

* ``mnist1d-lt-prior-policies``, ``seg-toy-prior-policies`` and ``gauss-lt-prior-long-policies``: LA alone and
  every arm of the full design that the reduced study lacks, so that with it every applicable policy (defaults and
  tuned) is measured on every data set at the default schedule and on gauss-lt at 3x epochs. Training is
  deterministic given the seed, so LA alone here repeats the reduced study's runs (research/prior.py checks that
  and pairs both studies' arms against one reference);
* ``mnist1d-lt-prior-long`` and ``seg-toy-prior-long``: the longer schedule, at 2x epochs (``LONG_EPOCHS``: 30 and
  60; 3x would cost about 130 minutes of one core with the reduced arms, against about 85), with the reduced arms,
  and ``mnist1d-lt-prior-long-policies`` and ``seg-toy-prior-long-policies`` beside them with the rest (about 80
  and 70 minutes of one core; defined in that round, run in a third, the evening of 2026-12-04);
* ``<dataset>-prior-learned``: the learned controllers on LA in a fair study (sweeps.spec.fair_study: every arm,
  LA alone included, trains without the same stratified 10% of the training set, on which the controllers
  meta-train): LA alone and ``la+policy=<name>`` for hypergradient, gammanet and bandit, at their defaults and
  tuned (``+tpe``, 4 trials), 16 runs per seed; ``<dataset>-prior-long-learned`` the same at the longer
  schedule (digits-lt and gauss-lt in that round, mnist1d-lt and seg-toy in the third). The fine-tuning control
  of the confirmatory studies (plain cross-entropy steps on the slice) is left out: on LA it would mix an
  unadjusted loss into an adjusted one, so it would not be the control "the labels without any gamma" that it is there.

A follow-up, after the second round showed AdaFocal on LA ahead of LA alone at 180 epochs on gauss-lt (AdaFocal
reads its statistics on the class-balanced validation set after every epoch: labels the other arms never train
with): ``gauss-lt-prior-adafocal`` and ``gauss-lt-prior-long-adafocal`` are fair studies (every arm holds out the
same 10% slice of the training set) with LA alone, AdaFocal on LA reading the validation set as published
(``la+policy=adafocal``, ``+tpe``) and reading the held-out slice instead (``...[slice]``: research.train's
``val_stats_data="train_slice"``), 11 runs per seed; ``gauss-lt-prior-long-adafocal-replication`` repeats the
long one on fresh seeds 3000-3009, pre-registered in research/preregistration_adafocal.md.

``research/prior.py`` analyses these studies (exploratory, except the pre-registered replication).
"""

from adaptive_focal.compare import default_arms as engine_arms
from adaptive_focal.compare import parse_arm

from ..spec import LEARNED, Arm, DatasetStudy, fair_study, learned_arms, logit_adjusted_arm

FIRST_SEED, SEEDS = 2000, 10
#: TPE trials per tuned arm and seed
TRIALS = 4
#: the fixed gammas of the focal term on top of LA (gamma 0 is LA alone, ``baseline=logit_adjusted``)
LA_GRID = (0.5, 1.0, 2.0, 3.0, 5.0)
#: the pre-registered policy (research/preregistration.md), in every study
POLICY = "flsd53"
#: reduced designs: the two best of the non-learned softmax policies in the data set's development study
BEST_POLICIES = {"gauss-lt": ("automated", "cyclical"), "mnist1d-lt": ("automated", "exponential"),
                 "seg-toy": ("exponential", "linear")}
#: epochs of the longer schedule: 3x research.train's data set default, 2x on mnist1d-lt and seg-toy (compute)
LONG_EPOCHS = {"digits-lt": 30, "gauss-lt": 180, "mnist1d-lt": 30, "seg-toy": 60}


def _policy_names() -> list[str]:
    """The softmax policies that need no held-out data, in the engine's order."""
    return [a.policy for a in engine_arms("softmax", learned=False) if a.policy and not a.tuned]


def arms(policies=None) -> tuple:
    """LA alone, LA + the fixed-gamma grid, LA + gamma=tpe, LA + each policy (defaults, and tuned when it has a
    search space), CB CE and CB focal. ``policies``: the policies (None: every softmax policy without held-out
    data); FLSD-53 at its defaults is always in."""
    out = [Arm("baseline=logit_adjusted", {"loss": "logit_adjusted"})]
    out += [logit_adjusted_arm(parse_arm(f"gamma={g:g}")) for g in LA_GRID]
    out.append(logit_adjusted_arm(parse_arm("gamma=tpe")))
    full = policies is None
    names = _policy_names() if full else [POLICY, *policies]
    for name in names:
        out.append(logit_adjusted_arm(parse_arm(f"policy={name}")))
        if name == POLICY and not full:
            continue
        tuned = [a for a in engine_arms("softmax", learned=False) if a.name == f"policy={name}+tpe"]
        out += [logit_adjusted_arm(a) for a in tuned]
    out += [Arm("baseline=cb_ce", {"loss": "cb_ce"}), Arm("baseline=cb_focal", {"loss": "cb_focal"})]
    return tuple(out)


def remaining_arms(policies) -> tuple:
    """LA alone and the arms of the full design (``arms()``) that ``arms(policies)`` lacks: run beside a reduced
    study, the two together hold the full design."""
    have = {a.name for a in arms(policies)}
    return (arms()[0], *(a for a in arms() if a.name not in have))


def adafocal_arms() -> tuple:
    """LA alone, and AdaFocal on LA (defaults and tuned) reading its end-of-epoch statistics on the class-balanced
    validation set (as published) and on the slice held out of the training set (``[slice]``)."""
    out = [Arm("baseline=logit_adjusted", {"loss": "logit_adjusted"})]
    for arm in (logit_adjusted_arm(parse_arm("policy=adafocal")), logit_adjusted_arm(parse_arm("policy=adafocal+tpe"))):
        out += [arm, Arm(f"{arm.name}[slice]", {**arm.config, "val_stats_data": "train_slice"}, arm.space)]
    return tuple(out)


def learned_prior_arms() -> tuple:
    """LA alone and the learned controllers on LA, meta-training on the held-out training slice, at their defaults
    and tuned over their search spaces; for a fair study, in which every arm holds the slice out."""
    out = [Arm("baseline=logit_adjusted", {"loss": "logit_adjusted"})]
    out += [logit_adjusted_arm(a) for a in learned_arms(LEARNED) if not a.name.endswith("[val]")]
    return tuple(out)


#: (study name, data set, research.train overrides, arms)
_PLAN = (
    ("digits-lt-prior", "digits-lt", {}, arms()),
    ("gauss-lt-prior", "gauss-lt", {}, arms()),
    ("mnist1d-lt-prior", "mnist1d-lt", {}, arms(BEST_POLICIES["mnist1d-lt"])),
    ("seg-toy-prior", "seg-toy", {}, arms(BEST_POLICIES["seg-toy"])),
    ("digits-lt-prior-long", "digits-lt", {"epochs": LONG_EPOCHS["digits-lt"]}, arms()),
    ("gauss-lt-prior-long", "gauss-lt", {"epochs": LONG_EPOCHS["gauss-lt"]}, arms(BEST_POLICIES["gauss-lt"])),
    ("mnist1d-lt-prior-policies", "mnist1d-lt", {}, remaining_arms(BEST_POLICIES["mnist1d-lt"])),
    ("seg-toy-prior-policies", "seg-toy", {}, remaining_arms(BEST_POLICIES["seg-toy"])),
    ("gauss-lt-prior-long-policies", "gauss-lt", {"epochs": LONG_EPOCHS["gauss-lt"]},
     remaining_arms(BEST_POLICIES["gauss-lt"])),
    ("mnist1d-lt-prior-long", "mnist1d-lt", {"epochs": LONG_EPOCHS["mnist1d-lt"]}, arms(BEST_POLICIES["mnist1d-lt"])),
    ("seg-toy-prior-long", "seg-toy", {"epochs": LONG_EPOCHS["seg-toy"]}, arms(BEST_POLICIES["seg-toy"])),
    ("mnist1d-lt-prior-long-policies", "mnist1d-lt", {"epochs": LONG_EPOCHS["mnist1d-lt"]},
     remaining_arms(BEST_POLICIES["mnist1d-lt"])),
    ("seg-toy-prior-long-policies", "seg-toy", {"epochs": LONG_EPOCHS["seg-toy"]},
     remaining_arms(BEST_POLICIES["seg-toy"])),
)
#: the learned controllers' fair studies: (study name, data set, research.train overrides), at the default and the
#: longer schedule
_LEARNED_PLAN = tuple((f"{d}-prior{long}-learned", d, {"epochs": LONG_EPOCHS[d]} if long else {})
                      for long in ("", "-long") for d in ("digits-lt", "gauss-lt", "mnist1d-lt", "seg-toy"))
#: AdaFocal's statistics on validation or on the held-out slice: (study name, research.train overrides)
_ADAFOCAL_PLAN = (("gauss-lt-prior-adafocal", {}),
                  ("gauss-lt-prior-long-adafocal", {"epochs": LONG_EPOCHS["gauss-lt"]}))
#: the pre-registered replication of gauss-lt-prior-long-adafocal on fresh seeds (research/preregistration_adafocal.md)
REPLICATION, REPLICATION_FIRST_SEED = "gauss-lt-prior-long-adafocal-replication", 3000
#: the fair studies of this family (every arm holds out the same slice of the training set)
FAIR = tuple(name for name, _, _ in _LEARNED_PLAN) + tuple(name for name, _ in _ADAFOCAL_PLAN) + (REPLICATION,)

#: study name -> DatasetStudy
STUDIES = {name: DatasetStudy(name=name, dataset=dataset, seeds=SEEDS, first_seed=FIRST_SEED, trials=TRIALS,
                              overrides=overrides, arms=study_arms)
           for name, dataset, overrides, study_arms in _PLAN}
STUDIES.update({name: fair_study(name=name, dataset=dataset, seeds=SEEDS, first_seed=FIRST_SEED, trials=TRIALS,
                                 overrides=overrides, arms=learned_prior_arms())
                for name, dataset, overrides in _LEARNED_PLAN})
STUDIES.update({name: fair_study(name=name, dataset="gauss-lt", seeds=SEEDS, first_seed=FIRST_SEED, trials=TRIALS,
                                 overrides=overrides, arms=adafocal_arms())
                for name, overrides in _ADAFOCAL_PLAN})
STUDIES[REPLICATION] = fair_study(name=REPLICATION, dataset="gauss-lt", seeds=SEEDS,
                                  first_seed=REPLICATION_FIRST_SEED, trials=TRIALS,
                                  overrides={"epochs": LONG_EPOCHS["gauss-lt"]}, arms=adafocal_arms())
