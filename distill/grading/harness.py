"""The functional-test harness: Python source appended to a candidate program and run inside
the sandbox (standard library only). It reads the inputs and expected outputs from a pickle the
host wrote, calls the entry point on each input under a per-input time limit, and compares
each output with the expected one there, in full (see distill/grading/code.py for the modes).
With no expected outputs it records the outputs instead, as an opaque packed blob."""

# The host never unpickles anything a sandbox wrote.
HARNESS = r'''

def _distill_close(a, b, atol):
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(
            _distill_close(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    return abs(a - b) <= atol + 1e-7 * abs(b)


def _distill_is_floats(x):
    if isinstance(x, float):
        return True
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(i, float) for i in x)
    return False


def _distill_as_lists(x):
    if isinstance(x, (list, tuple)):
        return [_distill_as_lists(i) for i in x]
    if isinstance(x, dict):
        return {k: _distill_as_lists(v) for k, v in x.items()}
    return x


def _distill_match(out, exp, mode, atol):
    try:
        if mode == "not_none":
            return out == exp if isinstance(out, bool) else exp == (out is not None)
        if mode == "exact":
            return bool(_distill_as_lists(out) == _distill_as_lists(exp))
        exact = bool(out == exp)
        if atol == 0 and _distill_is_floats(exp):
            atol = 1e-6
        if not exact and atol != 0:
            return type(out) == type(exp) and _distill_close(out, exp, atol)
        return exact
    except Exception:
        return False


def _distill_functional(spec_file, token):
    import base64, pickle, signal, sys, time, zlib
    with open(spec_file, "rb") as f:
        spec = pickle.load(f)
    name = spec["entry_point"]
    fn = globals().get(name)
    if fn is None and isinstance(globals().get("Solution"), type):
        fn = getattr(globals()["Solution"](), name, None)
    if fn is None:
        raise NameError("name %r is not defined" % name)
    check = None
    if spec["checker"]:
        scope = {"match": lambda out, exp, atol: _distill_match(out, exp, spec["mode"], atol)}
        exec(spec["checker"], scope)
        check = scope["check"]
    expected = spec["outputs"]
    if expected is None and spec["outputs_packed"] is not None:
        expected = pickle.loads(zlib.decompress(base64.b64decode(spec["outputs_packed"])))
    record = expected is None

    class _DistillTimeLimit(BaseException):
        pass

    def _alarm(*_):
        raise _DistillTimeLimit()

    signal.signal(signal.SIGALRM, _alarm)
    # The inputs and expected outputs can be millions of objects (Mbpp/255's are a gigabyte):
    # frozen, the garbage collector stops walking them during every call of the candidate.
    import gc
    gc.freeze()
    outs, times = [], []
    for i, inp in enumerate(spec["inputs"]):
        limit = spec["limits"][i]
        timed_out = False
        try:
            signal.setitimer(signal.ITIMER_REAL, limit)
            start = time.perf_counter()
            try:
                # Each input is a fresh unpickled copy, used once: no deepcopy needed.
                out = fn(*inp)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _DistillTimeLimit:        # also when it fires as the call returns
            timed_out = True
        if timed_out:
            raise TimeoutError("time limit of %.1f s on input %d" % (limit, i))
        times.append(time.perf_counter() - start)
        if record:
            outs.append(out is not None if spec["mode"] == "not_none" else out)
            gc.freeze()
            continue
        exp = expected[i]
        ok = check(inp, out, exp, spec["atol"]) if check else \
            _distill_match(out, exp, spec["mode"], spec["atol"])
        if not ok:
            raise AssertionError("wrong answer on input %d: got %.80r, want %.80r" % (i, out, exp))
    if record:
        sys.stdout.write("\n" + base64.b64encode(zlib.compress(pickle.dumps(outs, 4), 1)).decode())
    sys.stdout.write("\n" + __import__("json").dumps(times) + "\n")

'''
