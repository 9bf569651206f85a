"""Stage `acquire`: check the raw files against data/manifest.csv, copy them to data/acquired."""

from _stage import load_params, log, run
from hetfx.paper.data.acquire import AcquireError, acquire
from hetfx.paper.params import ParamsError

STAGE = "acquire"


def main() -> None:
    params = load_params()
    verified = acquire(params.acquire.source, "data/manifest.csv", "data/acquired")
    for item in verified:
        log(STAGE, f"verified {item.file}: sha256 {item.sha256[:12]}..., {item.bytes} bytes")


if __name__ == "__main__":
    run(STAGE, main, (AcquireError, ParamsError, FileNotFoundError))
