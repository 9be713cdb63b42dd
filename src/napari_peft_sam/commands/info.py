"""``methods`` and ``models``: what this installation offers."""

from __future__ import annotations

import json
import textwrap

from .base import Command


class MethodsCommand(Command):
    name = "methods"
    help = "List every PEFT method with its hyperparameters, defaults and ranges."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args):
        from napari_peft_sam.core.methods import available_methods, get_method

        described = [get_method(m).config_cls.describe() for m in available_methods()]
        if args.json:
            print(json.dumps(described, indent=2))
            return 0
        for method in described:
            flags = [
                "mergeable" if method["mergeable"] else "not mergeable",
                "starts as the base model" if method["zero_init"] else "random init",
            ]
            print(f"{method['method']:<15} {method['title']} ({', '.join(flags)})")
            print(textwrap.indent(method["summary"], " " * 16))
            for hp in method["hyperparameters"]:
                default = hp["default"]
                default = (
                    ",".join(map(str, default))
                    if isinstance(default, list)
                    else default
                )
                print(f"{'':16}{hp['name']} = {default}  [{hp['range']}]")
                print(f"{'':18}{hp['help']}")
            print()
        return 0


class ModelsCommand(Command):
    name = "models"
    help = "List the base models and where their weights are cached."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="print JSON")

    def run(self, args):
        from napari_peft_sam.core.models import available_models, model_cache_dir
        from napari_peft_sam.core.recipes import recipe_for

        cache = model_cache_dir()
        rows = []
        for name in available_models():
            recipe = recipe_for(name)
            cached = name in ("tiny", "demo") or (cache / name).is_file()
            rows.append(
                {"name": name, "cached": cached, "recipe": recipe.name}
                | {"recipe_settings": recipe.settings}
            )
        if args.json:
            print(json.dumps({"cache": str(cache), "models": rows}, indent=2))
            return 0
        print(f"cache folder: {cache}")
        for row in rows:
            state = "cached" if row["cached"] else "download"
            print(f"  {row['name']:<24} {state:<9} recipe {row['recipe']}")
        print("\nrecipes (training settings a flag does not override):")
        for recipe in {
            recipe_for(r["name"]).name: recipe_for(r["name"]) for r in rows
        }.values():
            values = ", ".join(f"{k} {v}" for k, v in recipe.settings.items())
            print(f"  {recipe.name}: {values}\n    ({recipe.why})")
        return 0
