"""The learners: PPO and IMPALA on one skeleton (`base`), RND around them, and the pure losses they compose."""
