"""Episodic memory in streams with episode ends: one FusedLSTM call per update with reset=.

B parallel "environments" each produce one long stream of back-to-back episodes of random
length (default 5 to 30 steps). The first step of an episode shows a cue, one of K symbols
(one-hot); the later steps show only noise. At every step the target is the cue of the
current episode, so the model must keep the cue for the rest of its episode and drop it when
the next episode begins. Some episodes (default 25%) show no cue at all: their answer is an
extra class, "none". The episode starts are the `reset` mask (True at each first step), as
an RL rollout gives them; like an environment's done flag, they are not in the inputs, so
only the mask tells where a cueless episode begins.

An LSTM + Linear head is trained with Adam the way PPO/IMPALA learners train: every update
takes the next chunk of T steps of all B streams, runs it in ONE call
`lstm(x, (h, c), reset=reset)`, and carries the final (h, c), detached, to the next chunk
(truncated backpropagation through time). The same model, from the same initial weights on
the same data, is also trained without the reset mask, so that its state runs on across
episode ends. Accuracy is measured on held-out streams, at the steps after each episode's
first step.

It also times one training update (forward and backward) of the one call against the
step-at-a-time loop RL code writes today (state *= 1 - done[t], then one step), on the same
weights and data. Plots both accuracy curves.

    python examples/episodic_memory.py [--updates 300] [--chunk 64] [--blank 0.25]
                                       [--out examples/out]
"""

import argparse
import copy
import statistics
import sys
import time

import torch
from torch import nn

from _common import Progress, add_common_args, describe_backend, save_plot, setup_torch


def make_streams(batch, length, cues, min_episode, max_episode, noise, blank, generator):
    """B streams of `length` steps, each a run of back-to-back episodes of min_episode to
    max_episode steps (the last one cut off by the stream's end). An episode's cue is one
    of 0..cues-1, or, with probability `blank`, the class `cues`: "no cue shown".

    Returns x: [length, batch, cues + noise] (channels 0..cues-1: the cue, one-hot at an
    episode's first step, zero elsewhere and at the start of a blank episode; the rest:
    standard normal noise at every step), reset: [length, batch] bool (True at each
    episode's first step, so at step 0 too) and y: [length, batch] int64 (the cue of the
    episode each step belongs to, 0..cues)."""
    most = length // min_episode + 1  # enough episodes to fill any stream
    lengths = torch.randint(min_episode, max_episode + 1, (batch, most), generator=generator)
    starts = lengths.cumsum(1) - lengths  # [batch, most]: first step of each episode
    episode_cue = torch.randint(0, cues, (batch, most), generator=generator)
    is_blank = torch.rand(batch, most, generator=generator) < blank
    episode_cue[is_blank] = cues
    reset = torch.zeros(batch, length, dtype=torch.bool)
    rows = torch.arange(batch).unsqueeze(1).expand(-1, most)
    inside = starts < length
    reset[rows[inside], starts[inside]] = True
    episode = reset.long().cumsum(1) - 1  # [batch, length]: index of the current episode
    y = episode_cue.gather(1, episode)
    x = torch.zeros(batch, length, cues + noise)
    x[..., :cues] = nn.functional.one_hot(y, cues + 1)[..., :cues] * reset.unsqueeze(-1)
    x[..., cues:] = torch.randn(batch, length, noise, generator=generator)
    return x.transpose(0, 1).contiguous(), reset.t().contiguous(), y.t().contiguous()


class Agent(nn.Module):
    """FusedLSTM (time-major, as RL rollouts are) and a Linear head over the answers."""

    def __init__(self, inputs, hidden, classes):
        super().__init__()
        from fused_lstm import FusedLSTM

        self.lstm = FusedLSTM(inputs, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x, state, reset=None):
        if reset is None:  # no episode ends: the state runs on
            out, state = self.lstm(x, state)
        else:
            out, state = self.lstm(x, state, reset=reset)
        return self.head(out), state

    def step_loop(self, x, state, reset):
        """What RL code writes today: one step at a time, the state zeroed where done."""
        h, c = state
        outs = []
        for t in range(x.size(0)):
            keep = (~reset[t]).float().view(1, -1, 1)
            out, (h, c) = self.lstm(x[t:t + 1], (h * keep, c * keep))
            outs.append(out)
        return self.head(torch.cat(outs)), (h, c)

    def zero_state(self, batch):
        h = torch.zeros(1, batch, self.lstm.hidden_size)
        return h, h.clone()


def recall_accuracy(logits, y, reset, blank_class):
    """Accuracy over the steps after each episode's first step (which shows its answer):
    in all, in the episodes with a cue, and in the blank ones (nan when there are none)."""
    later = ~reset
    right = (logits.argmax(-1) == y) & later
    blank = y == blank_class

    def share(mask):
        n = (later & mask).sum().item()
        return (right & mask).sum().item() / n if n else float("nan")

    return {"all": share(torch.ones_like(blank)), "cued": share(~blank), "blank": share(blank)}


def evaluate(model, data, use_reset):
    x, reset, y = data
    model.eval()
    with torch.no_grad():
        logits, _ = model(x, model.zero_state(x.size(1)), reset if use_reset else None)
    model.train()
    return recall_accuracy(logits, y, reset, model.head.out_features - 1)


def train(model, name, stream, test, use_reset, args):
    """Truncated BPTT over the stream, chunk by chunk; (h, c) carried across chunks."""
    x_all, reset_all, y_all = stream
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    state = model.zero_state(args.batch)
    curve = [(0, evaluate(model, test, use_reset))]
    losses = []
    bar = Progress(args.updates, name, enabled=not args.no_progress)
    start = time.perf_counter()
    for update in range(1, args.updates + 1):
        chunk = slice((update - 1) * args.chunk, update * args.chunk)
        x, reset, y = x_all[chunk], reset_all[chunk], y_all[chunk]
        opt.zero_grad()
        logits, state = model(x, state, reset if use_reset else None)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        state = tuple(s.detach() for s in state)  # carried on, without its history
        losses.append(loss.item())
        if update % args.eval_every == 0 or update == args.updates:
            curve.append((update, evaluate(model, test, use_reset)))
            bar.log(f"  {name}, update {update}: held-out accuracy "
                    f"{100 * curve[-1][1]['all']:.2f}% ({time.perf_counter() - start:.1f}s)")
        bar.update(loss=losses[-1], acc=curve[-1][1]["all"])
    bar.close()
    return {"accuracy": curve[-1][1]["all"], "final": curve[-1][1], "curve": curve,
            "losses": losses, "time": time.perf_counter() - start}


def time_update(model, data, reps, warmup=3):
    """Median seconds of one training update's forward and backward: the one call with
    reset= against the step-at-a-time loop, same weights and data, interleaved (the order
    flips every round). Also the largest difference between the two ways' losses and
    gradients, which should be at rounding level."""
    x, reset, y = data
    gen = torch.Generator().manual_seed(1)
    state = tuple(0.5 * torch.randn(1, x.size(1), model.lstm.hidden_size, generator=gen)
                  for _ in range(2))  # a carried state, as in the middle of a stream
    results = {}

    def update(name, forward):
        def run():
            model.zero_grad()
            logits, _ = forward(x, state, reset)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
            loss.backward()
            results[name] = [loss.detach()] + [p.grad.clone() for p in model.parameters()]
        return run

    ways = {"one call": update("one call", model),
            "step loop": update("step loop", model.step_loop)}
    times = {name: [] for name in ways}
    for rep in range(warmup + reps):
        for name in (list(ways) if rep % 2 == 0 else list(ways)[::-1]):
            start = time.perf_counter()
            ways[name]()
            if rep >= warmup:
                times[name].append(time.perf_counter() - start)
    model.zero_grad()
    gap = max((a - b).abs().max().item()
              for a, b in zip(results["one call"], results["step loop"]))
    return {**{name: statistics.median(t) for name, t in times.items()}, "difference": gap}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=300, help="optimizer steps (chunks) per run")
    p.add_argument("--chunk", type=int, default=64, help="steps T per update (one call)")
    p.add_argument("--batch", type=int, default=32, help="parallel streams B")
    p.add_argument("--cues", type=int, default=4, help="number of cue symbols K")
    p.add_argument("--blank", type=float, default=0.25,
                   help="share of episodes that show no cue (answer: an extra class, 'none'); "
                   "0: every episode shows one")
    p.add_argument("--noise", type=int, default=4, help="noise channels")
    p.add_argument("--min-episode", type=int, default=5)
    p.add_argument("--max-episode", type=int, default=30)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--test-batch", type=int, default=64, help="held-out streams")
    p.add_argument("--test-length", type=int, default=1000, help="steps per held-out stream")
    p.add_argument("--timing-reps", type=int, default=20,
                   help="interleaved repetitions of the timed update (0: no timing)")
    add_common_args(p)
    args = p.parse_args(argv)
    if not 1 <= args.min_episode <= args.max_episode:
        p.error("need 1 <= --min-episode <= --max-episode")
    if not 0 <= args.blank < 1:
        p.error("--blank must be in [0, 1)")
    setup_torch(args)

    episodes = (args.cues, args.min_episode, args.max_episode, args.noise, args.blank)
    gen = torch.Generator().manual_seed(args.seed)
    stream = make_streams(args.batch, args.updates * args.chunk, *episodes, gen)
    test = make_streams(args.test_batch, args.test_length, *episodes,
                        torch.Generator().manual_seed(10**6))
    later = test[2][~test[1]]  # held-out answers after each episode's first step
    majority = later.bincount().max().item() / later.numel()
    print(f"episodic memory: {args.batch} streams of episodes of {args.min_episode}-"
          f"{args.max_episode} steps, {args.cues} cues ({100 * args.blank:.0f}% of episodes "
          f"show none) + {args.noise} noise channels; hidden {args.hidden}, {args.updates} "
          f"updates of {args.chunk} steps (one call each), Adam lr {args.lr}")
    print(describe_backend())

    torch.manual_seed(args.seed)
    with_reset = Agent(args.cues + args.noise, args.hidden, args.cues + 1)
    without = copy.deepcopy(with_reset)  # same initial weights, same data
    runs = {}
    for name, model, use_reset in (("with resets", with_reset, True),
                                   ("without resets", without, False)):
        runs[name] = r = train(model, name, stream, test, use_reset, args)
        blank = (f", blank {100 * r['final']['blank']:.2f}%" if args.blank else "")
        print(f"{name:>14}: held-out accuracy {100 * r['accuracy']:.2f}% (episodes with a cue "
              f"{100 * r['final']['cued']:.2f}%{blank})  final loss {r['losses'][-1]:.4f}  "
              f"train time {r['time']:.1f}s ({1000 * r['time'] / args.updates:.1f} ms/update)")

    timing = None
    if args.timing_reps:
        data = tuple(t[:args.chunk] for t in stream)
        timing = time_update(with_reset, data, args.timing_reps)
        print(f"one training update (T={args.chunk}, B={args.batch}, forward + backward, same "
              f"weights), median of {args.timing_reps}: one call with reset= "
              f"{1000 * timing['one call']:.2f} ms, step-at-a-time loop "
              f"{1000 * timing['step loop']:.2f} ms: one call "
              f"{timing['step loop'] / timing['one call']:.1f}x faster (largest difference in "
              f"loss and gradients between the two: {timing['difference']:.1e})")
    a, b = runs["with resets"]["accuracy"], runs["without resets"]["accuracy"]
    print(f"held-out accuracy with resets: {100 * a:.2f}%, without: {100 * b:.2f}% "
          f"(always the most common answer: {100 * majority:.2f}%)")

    def draw(plt):
        for name, run in runs.items():
            steps, accs = zip(*run["curve"])
            plt.plot(steps, [100 * v["all"] for v in accs], marker=".", label=name)
        plt.axhline(100 * majority, color="gray", linestyle="--", label="most common answer")
        plt.xlabel("update")
        plt.ylabel("held-out accuracy after the cue step (%)")
        plt.title(f"Episodic memory: FusedLSTM (hidden {args.hidden}), "
                  f"{args.chunk}-step chunks, one call each")
        plt.legend()

    plot = save_plot(args.out, "episodic_memory.png", draw, enabled=not args.no_plot)
    return {"with resets": runs["with resets"], "without resets": runs["without resets"],
            "majority": majority, "timing": timing, "plot": plot}


if __name__ == "__main__":
    main(sys.argv[1:])
