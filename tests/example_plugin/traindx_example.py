"""A tiny third-party plugin, registered through a real entry point by the tests: it proves the
plugin contract end to end (declarations, step and eval hooks, the shared tensors, findings)."""
import numpy as np

from engine.plugin import Finding, Plugin, Series, Setting, View


class ExamplePlugin(Plugin):
    name = "example"
    title = "Example"
    settings = (Setting("probe_size", 32, "samples in the probe set", min=1),
                Setting("explode_at", 0, "raise at this step (0: never)", min=0),
                Setting("explode_in_state", 0, "raise when asked for a checkpoint's state (1: yes)", min=0, max=1))
    default_every = 5

    def __init__(self, settings, every, on):
        super().__init__(settings, every, on)
        self.seen_step_ids = []
        self.seen_eval = []
        self.closed = 0

    def series(self, run):
        return [Series("batch_max_loss", (), description="largest per-sample loss of the batch"),
                Series("probe_loss", (), description="mean loss on the fixed probe set"),
                Series("val_embedding_norm", (), description="mean norm of the validation embeddings"),
                Series("table", (), dtype="json"),
                Series("ended", (), description="the step training ended at")]

    def views(self):
        return [View("line", "Batch max loss", ("example/batch_max_loss",), "the hardest sample's loss")]

    def on_step(self, ctx):
        if ctx.step == self.settings["explode_at"]:
            raise RuntimeError("planted failure")
        assert ctx.per_sample_loss.shape == (len(ctx.ids),)
        assert abs(float(ctx.per_sample_loss.mean()) - float(ctx.loss.detach())) < 1e-5
        self.seen_step_ids.append(np.asarray(ctx.ids))
        ctx.log("batch_max_loss", float(ctx.per_sample_loss.max()))
        probe = ctx.run.probe(self.settings["probe_size"])
        import torch
        with torch.no_grad():
            ctx.log("probe_loss", float(ctx.run.mean_loss(ctx.model(probe.inputs), probe.targets)))

    def on_eval(self, ctx):
        self.seen_eval.append((ctx.step, ctx.logits.shape, ctx.embeddings.shape, sorted(ctx.metadata)))
        ctx.log("val_embedding_norm", float(ctx.embeddings.norm(dim=1).mean()))
        ctx.log("table", {"columns": ["step"], "rows": [[ctx.step]]})

    def on_end(self, ctx):
        ctx.log("ended", ctx.step)

    def close(self):
        self.closed += 1

    def state_dict(self):
        if self.settings["explode_in_state"]:
            raise RuntimeError("planted state failure")
        return {}

    @classmethod
    def findings(cls, run):
        steps, values = run.series("example/batch_max_loss")
        i = int(np.argmax(values))
        return [Finding("example", "info", "largest batch loss", int(steps[i]), float(values[i]))]
