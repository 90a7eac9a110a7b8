"""What runs when a step is replayed, for tests that check what the compiled code does rather than
how its source reads."""

from tinygrad_rnn import ops


def op_methods_run(monkeypatch) -> list:
    """A list that fills with (op class, method) for each ``forward``, ``vjp`` and ``vjp_term`` of an
    op called from now on: a compiled replay calls one only where it could not write the op out.
    Install it after the step is compiled (the inliner reads the methods' own source)."""
    run = []

    def every(cls):
        yield cls
        for sub in cls.__subclasses__():
            yield from every(sub)

    def watching(name: str, method):
        def watched(self, *args, **kwargs):
            run.append((type(self).__name__, name))
            return method(self, *args, **kwargs)

        return watched

    for cls in set(every(ops.Op)):
        for name in ("forward", "vjp", "vjp_term"):
            if name in vars(cls):
                monkeypatch.setattr(cls, name, watching(name, vars(cls)[name]))
    return run
