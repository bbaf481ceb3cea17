"""Studies as library code: what a study trains, measures, tabulates and draws, without flags.

`binaries/*_study_main.py` and the other programs that write figures parse their flags and call these.
The package sits at the level of `agents/`: it imports `envs`, `agents`, `runtime` and third-party
packages, never `binaries` or `pbt` (which may import it).

  plotting.py               the one plotting helper of every study figure (Agg backend, shared styling)
  random_mdp_training.py    the random-MDP study's tabular trainer: configuration, teachers, training, summaries
  random_mdp_report.py      its tables and figures
  random_mdp_study.py       its parts run one after the other, with progress; writes study.md/.json and plots
"""
