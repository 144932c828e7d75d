"""The research job: question in, trajectory and cited report out, everything stored."""
