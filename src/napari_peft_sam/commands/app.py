"""``demo`` and ``gui``: the main job offline, and napari with the plugin."""

from __future__ import annotations

from .base import Command


class DemoCommand(Command):
    name = "demo"
    help = "The main job, offline: fine-tune the shipped demo model on a new domain."

    def add_arguments(self, parser):
        parser.add_argument("--workdir", default="runs/demo", help="where results go")

    def run(self, args):
        import time

        from napari_peft_sam.core import results
        from napari_peft_sam.core.demo import run_demo

        started = time.monotonic()
        out = run_demo(args.workdir, log=lambda m: print(m, flush=True))
        base = out["base"]
        print(
            "\nbase model (no fine-tuning): "
            + ", ".join(f"{k} {v:.3f}" for k, v in base.items() if v is not None)
        )
        print("\nLoRA on organoids (held-out images, mSA):\n")
        print(results.markdown(out["table"]))
        if out["heatmap"]:
            print(f"\nheatmap: {out['heatmap']}")
        print(f"results store: {out['storage']}  ({time.monotonic() - started:.0f} s)")
        print(
            f"print them again any time: napari-peft-sam report --storage {out['storage']}"
        )
        print(
            f"open them in napari (table, heatmap, prompt tester): "
            f"napari-peft-sam gui --home {args.workdir}"
        )
        return 0


class GuiCommand(Command):
    name = "gui"
    help = "Open napari with the plugin's widgets docked, the sample data and the demo model."

    def add_arguments(self, parser):
        parser.add_argument(
            "--home",
            help="folder of the results store and runs (default: $NAPARI_PEFT_SAM_HOME "
            "or ~/napari-peft-sam); 'runs/demo' shows the demo's results",
        )
        parser.add_argument(
            "--sample", default="organoids", choices=["nuclei", "organoids", "none"]
        )

    def run(self, args):
        from napari_peft_sam._qt.launch import launch

        launch(home=args.home, sample=None if args.sample == "none" else args.sample)
        return 0
