"""Studies as library code: what a study trains, measures, tabulates and draws, without flags.

`binaries/*_study_main.py` and the other programs that write figures parse their flags and call these.
The package sits above `agents/`: it imports `envs`, `agents`, `runtime` and third-party packages, never
`binaries` or `pbt` (which may import it). Its figures are drawn with `runtime.plotting`.

  random_mdp_training.py    the random-MDP study's tabular trainer: configuration, teachers, training, summaries
  random_mdp_report.py      its tables and figures
  random_mdp_study.py       its parts run one after the other, with progress; writes study.md/.json and plots
"""
