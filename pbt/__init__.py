"""Population based training of Protégé learners on Ray Tune (Jaderberg et al. 2017; Kickstarting's PBT).

* `pbt.member`: a learner (`agents.training.trainer.Trainer`) as a Ray Tune Trainable, with atomic checkpoints.
* `pbt.scheduler`: Ray Tune's PBT scheduler with t-test selection, clipped explore and the search space.
* `pbt.lineage`: the JSON-lines log of reports, exploits and explores, and its plot.

`binaries/pbt_main.py` runs a population.
"""
