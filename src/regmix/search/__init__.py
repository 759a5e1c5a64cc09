"""The search for the mixture: sample proxy mixtures under the caps, the runs table they are
trained into, the regressors, cross-validated fitting, the simulation that averages the best
candidates into the optimum, and the proposals of later rounds.

May import `regmix.data` and the top-level helpers; never training, so fitting and
simulating never pay for importing torch.
"""
