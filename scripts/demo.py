"""Render the template into a throwaway sample project and run the generated CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import copier

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    if sys.argv[1:2] == ["--prometheus"]:
        from demo_prometheus import main as prometheus_demo

        return prometheus_demo(sys.argv[2:])
    seconds = sys.argv[1] if len(sys.argv) > 1 else "6"
    with tempfile.TemporaryDirectory(prefix="demo-traffic-") as folder:
        project = Path(folder)
        (project / "sample_shop").mkdir()
        (project / "sample_shop" / "__init__.py").write_text('"""A sample app."""\n')
        print(f"==> copier copy {REPO} {project}  (app_name=sample_shop)", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a dirty working tree while developing
            copier.run_copy(
                str(REPO), project, data={"app_name": "sample_shop"}, defaults=True, quiet=True
            )
        for path in sorted(project.rglob("*")):
            if path.is_file():
                print(f"    wrote {path.relative_to(project)}")
        command = [sys.executable, "-m", "sample_shop.demo_traffic", "--duration", seconds]
        print(f"==> {' '.join(command[1:])}  (console exporters; logs on stderr)", flush=True)
        environment = {**os.environ, "OTEL_METRIC_EXPORT_INTERVAL": "3000"}
        return subprocess.run(command, cwd=project, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
