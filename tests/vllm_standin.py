"""A stand-in for the `vllm` command (vLLM needs a GPU and cannot be installed here): it takes
`vllm serve MODEL --port P --served-model-name NAME [flags]`, writes its arguments as JSON to
$VLLM_STANDIN_ARGV, and serves MODEL with distill's own OpenAI-compatible server in a child
process, as vLLM runs its engine in one. SIGTERM stops the child, then itself."""

import json
import os
import signal
import subprocess
import sys


def main() -> None:
    args = sys.argv[1:]
    assert args[0] == "serve", args
    model = args[1]

    def flag(name: str) -> str:
        return args[args.index(name) + 1]

    with open(os.environ["VLLM_STANDIN_ARGV"], "w") as f:
        json.dump(args, f)
    child = subprocess.Popen([sys.executable, "-m", "distill.teacher.server", "--model", model,
                              "--port", flag("--port"), "--served-name", flag("--served-model-name")])
    with open(os.environ["VLLM_STANDIN_ARGV"] + ".child", "w") as f:
        f.write(str(child.pid))
    print(f"INFO vllm stand-in: serving {model} (engine pid {child.pid})", flush=True)

    def stop(*_):  # the main thread's child.wait() below returns once the engine is gone
        print("INFO vllm stand-in: shutting down", flush=True)
        child.terminate()
    signal.signal(signal.SIGTERM, stop)
    code = child.wait()
    print(f"INFO vllm stand-in: engine exited with {code}", flush=True)


if __name__ == "__main__":
    main()
