"""Bound the memory a model file's graph asks for, from the shapes of what it computes.

A few bytes of graph can ask for gigabytes (fill a tensor of a constant shape, broadcast two
long vectors, pad, tile, resize). Rather than list the ops that allocate from a shape, and
miss one, a model check infers the shape of every tensor the graph computes, with the batch
dimension set to 1 and then to 2, and hands them here. Every shape must be known at both;
each dimension must be fixed or exactly twice as large at 2 (proportional to the batch),
one at most per tensor; and the tensors' total, all of them alive at once, must fit a stated
budget per image and another for what does not depend on the batch. Together with the
model checks' rule that shapes are never computed from data (only passed along), that
bounds every batch size, not only the two tried.
"""

from quantlab.errors import QuantlabError

# Far above quantlab's nets (their ONNX and GraphDef files compute at most 0.8 MiB per image
# and 29 MiB besides the batch: dense's frozen weights, constants and their identities), far
# below a machine's memory at the batch sizes a study runs (64 x 32 MiB + 512 MiB).
PER_IMAGE_BYTES = 32 << 20
FIXED_BYTES = 512 << 20


def elements(dims):
    count = 1
    for dim in dims:
        count *= max(int(dim), 0)
    return count


def check(source, tensors, fix, complete=True):
    """Raise a one-line QuantlabError unless ``tensors`` fit the budget.

    ``tensors``: (name, op, dims at batch 1, dims at batch 2, bytes per element), dims None
    where inference could not tell; for a model of fixed batch, the same dims twice.
    ``complete``: False skips unknown shapes (a first, partial pass).
    """
    totals = {"per image": 0, "besides the batch": 0}
    largest = {}
    for name, op, dims, again, itemsize in tensors:
        if dims is None or again is None:
            if not complete:
                continue
            raise QuantlabError(f"{source}: the size of tensor {name!r:.80} ({op} node) depends on "
                                f"the data it computes, so the memory it takes cannot be bounded "
                                f"before it runs; {fix}")
        grows = [i for i, (a, b) in enumerate(zip(dims, again)) if a != b]
        if len(dims) != len(again) or len(grows) > 1 or any(again[i] != 2 * dims[i] for i in grows):
            raise QuantlabError(f"{source}: tensor {name!r:.80} ({op} node) changes with the batch "
                                f"other than in proportion to it (shape {list(dims)} at batch 1, "
                                f"{list(again)} at 2); {fix}")
        what = "per image" if grows else "besides the batch"
        size = elements(dims) * itemsize
        totals[what] += size
        largest[what] = max(largest.get(what, (0, None, None)), (size, name, list(dims)),
                            key=lambda entry: entry[0])
    for (what, total), limit in zip(totals.items(), (PER_IMAGE_BYTES, FIXED_BYTES)):
        if total > limit:
            name, dims = largest[what][1:]
            raise QuantlabError(f"{source} computes {total / 2**20:,.0f} MiB of tensors {what} "
                                f"(the largest: {name!r:.80} of shape {dims}), over quantlab's "
                                f"limit of {limit >> 20} MiB; {fix}")
