"""A sentiment-style classifier: embedding -> 2-layer bidirectional FusedLSTM -> Linear.

The classic sentiment model (embedding, a 2-layer bidirectional LSTM with dropout, the final
hidden states of both directions concatenated, a Linear layer), on a synthetic corpus so it
runs offline: "reviews" are sequences of token ids of varying length (default 8 to 64) drawn
from a vocabulary in which a few tokens are "positive", a few "negative" and the rest
neutral; a review is positive when it holds more positive than negative tokens. Batches are
fed as PackedSequences, so padding never reaches the LSTM. Prints test accuracy (and the
accuracy of the majority class); plots the loss and accuracy curves.

    python examples/sentiment.py [--epochs 8] [--out examples/out]
"""

import argparse
import sys
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_sequence

from _common import Progress, add_common_args, describe_backend, save_plot, setup_torch

PAD = 0


def make_corpus(n, vocab, n_sentiment, min_len, max_len, generator):
    """n reviews (token-id tensors) and labels. Tokens 1..n_sentiment are positive,
    n_sentiment+1..2*n_sentiment negative, the rest of 1..vocab-1 neutral."""
    pos = torch.arange(1, n_sentiment + 1)
    neg = pos + n_sentiment
    reviews, labels = [], []
    while len(reviews) < n:
        length = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))
        tokens = torch.randint(2 * n_sentiment + 1, vocab, (length,), generator=generator)
        # a handful of sentiment tokens at random places, counts drawn so both labels occur
        k = int(torch.randint(1, max(2, length // 4) + 1, (1,), generator=generator))
        places = torch.randperm(length, generator=generator)[:k]
        is_pos = torch.rand(k, generator=generator) < torch.rand(1, generator=generator)
        tokens[places] = torch.where(
            is_pos, pos[torch.randint(0, n_sentiment, (k,), generator=generator)],
            neg[torch.randint(0, n_sentiment, (k,), generator=generator)])
        n_pos, n_neg = int(is_pos.sum()), int((~is_pos).sum())
        if n_pos == n_neg:
            continue  # no ties: every review has a definite label
        reviews.append(tokens)
        labels.append(float(n_pos > n_neg))
    return reviews, torch.tensor(labels)


class SentimentModel(nn.Module):
    def __init__(self, vocab, embed, hidden, layers=2, dropout=0.3):
        super().__init__()
        from fused_lstm import FusedLSTM

        self.embedding = nn.Embedding(vocab, embed, padding_idx=PAD)
        self.lstm = FusedLSTM(embed, hidden, num_layers=layers, bidirectional=True,
                              dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, 1)

    def forward(self, tokens, lengths):
        embedded = self.dropout(self.embedding(tokens))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)
        # h_n: (layers * 2, batch, hidden); the last layer's forward and backward states
        hidden = torch.cat([h_n[-2], h_n[-1]], dim=-1)
        return self.fc(self.dropout(hidden)).squeeze(-1)


def collate(reviews, labels, idx):
    batch = [reviews[i] for i in idx]
    lengths = torch.tensor([len(r) for r in batch])
    return pad_sequence(batch, batch_first=True, padding_value=PAD), lengths, labels[idx]


def accuracy(model, reviews, labels, batch_size=500):
    model.eval()
    correct = 0
    with torch.no_grad():
        for idx in torch.arange(len(reviews)).split(batch_size):
            tokens, lengths, y = collate(reviews, labels, idx)
            correct += ((model(tokens, lengths) > 0).float() == y).sum().item()
    model.train()
    return correct / len(reviews)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--steps", type=int, default=0,
                   help="stop each epoch after this many steps (0: whole epoch)")
    p.add_argument("--train-size", type=int, default=6000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--vocab", type=int, default=500)
    p.add_argument("--sentiment-tokens", type=int, default=15)
    p.add_argument("--min-len", type=int, default=8)
    p.add_argument("--max-len", type=int, default=64)
    p.add_argument("--embed", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    add_common_args(p)
    args = p.parse_args(argv)
    setup_torch(args)

    gen = torch.Generator().manual_seed(args.seed)
    corpus = (args.vocab, args.sentiment_tokens, args.min_len, args.max_len)
    train_x, train_y = make_corpus(args.train_size, *corpus, gen)
    test_x, test_y = make_corpus(args.test_size, *corpus, gen)
    majority = max(test_y.mean().item(), 1 - test_y.mean().item())
    model = SentimentModel(args.vocab, args.embed, args.hidden, dropout=args.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    steps_per_epoch = -(-len(train_x) // args.batch)
    if args.steps:
        steps_per_epoch = min(steps_per_epoch, args.steps)
    print(f"sentiment: {len(train_x)} train / {len(test_x)} test reviews of {args.min_len}-"
          f"{args.max_len} tokens (vocab {args.vocab}), 2-layer BiLSTM hidden {args.hidden}, "
          f"dropout {args.dropout}, {args.epochs} epochs x {steps_per_epoch} steps")
    print(describe_backend())

    losses, history = [], []
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(train_x), generator=gen).split(args.batch)[:steps_per_epoch]
        bar = Progress(len(order), f"epoch {epoch}", enabled=not args.no_progress)
        for idx in order:
            tokens, lengths, y = collate(train_x, train_y, idx)
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(model(tokens, lengths), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            losses.append(loss.item())
            bar.update(loss=losses[-1])
        bar.close()
        acc = accuracy(model, test_x, test_y)
        history.append((len(losses), acc))
        print(f"epoch {epoch}: mean train loss {sum(losses[-len(order):]) / len(order):.4f}, "
              f"test accuracy {100 * acc:.2f}%  ({time.perf_counter() - start:.1f}s)")
    elapsed = time.perf_counter() - start
    final = history[-1][1]
    print(f"test accuracy {100 * final:.2f}% (majority class {100 * majority:.1f}%), "
          f"trained in {elapsed:.1f}s")

    def draw(plt):
        ax = plt.gca()
        ax.plot(losses, alpha=0.5, label="training loss")
        ax.set_xlabel("step")
        ax.set_ylabel("binary cross-entropy")
        ax2 = ax.twinx()
        steps, accs = zip(*history)
        ax2.plot(steps, [100 * a for a in accs], "o-", color="C1", label="test accuracy")
        ax2.set_ylabel("test accuracy (%)")
        ax.set_title("Synthetic sentiment: embedding -> 2-layer BiLSTM (FusedLSTM) -> Linear")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        ax.legend(lines, [ln.get_label() for ln in lines], loc="center right")

    plot = save_plot(args.out, "sentiment.png", draw, enabled=not args.no_plot)
    return {"accuracy": final, "majority": majority, "history": history, "time": elapsed,
            "plot": plot}


if __name__ == "__main__":
    main(sys.argv[1:])
