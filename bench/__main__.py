"""`python -m bench` (`make bench`): every benchmark in turn, each printing its table and
writing its JSON to bench/results/."""

from bench import drift

if __name__ == "__main__":
    raise SystemExit(drift.main([]))
