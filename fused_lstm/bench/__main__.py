"""`python -m fused_lstm.bench`: run the benchmark (fused_lstm/bench/cli.py), then exit with
status 1 when FusedLSTM's results disagree with nn.LSTM's, 0 otherwise."""

import sys

from .cli import main
from .report import disagreement_lines

if __name__ == "__main__":
    # A timing of results that disagree with nn.LSTM's is no result: exit 1 after the report.
    sys.exit(1 if disagreement_lines(main()["results"]) else 0)
