"""Running a plan: what to skip, the log, and the local scheduler.

Every task is one `objcrop <stage> …` process with its own log (OUT/logs/<task>.log). A task whose
outputs are complete (or whose result a `--records` record holds) is skipped, so a rerun continues
where the last one stopped. Locally, up to `jobs` independent tasks run side by side, in plan order,
a ready probe first; the first failure stops new tasks from starting, or with `keep_going` only
those that need it. `--launcher slurm` / `submitit-local` hand the tasks to objcrop.pipeline.slurm.
"""
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Set

from objcrop.pipeline import tasks as tasks_mod
from objcrop.pipeline.preflight import refusal_on_this_machine
from objcrop.pipeline.presets import PipelineError
from objcrop.pipeline.tasks import Task, objcrop_argv

PROG = "objcrop pipeline"


class Pipeline:
    def __init__(self, tasks: List[Task], out: str, launcher: str = "local", dry_run: bool = False,
                 slurm: Optional[Dict[str, Any]] = None, wait: bool = False, jobs: int = 1,
                 recorded: Optional[Set[str]] = None, records: str = "", keep_going: bool = False,
                 accumulated: Optional[Set[str]] = None, run_again: Optional[Dict[str, str]] = None):
        self.tasks, self.out, self.launcher, self.dry_run = tasks, os.path.abspath(out), launcher, dry_run
        self.keep_going = keep_going
        self.recorded, self.records = set(recorded or ()), records
        self.accumulated = set(accumulated or ())  # the accumulating runs the record holds
        self.run_again = dict(run_again or {})  # {task: why}: recorded, but not as the task plans it now
        self.wait = wait
        self.slurm = slurm or {}
        self.log_dir = os.path.join(self.out, "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.pipeline_log = os.path.join(self.log_dir, "pipeline.log")
        self.jobs = max(1, int(jobs))

    def say(self, msg: str) -> None:
        line = f"[pipeline {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        with open(self.pipeline_log, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def log_path(self, task: Task) -> str:
        return os.path.join(self.log_dir, f"{task.name}.log")

    def fail(self, task: Task, why: str) -> int:
        log = self.log_path(task)
        self.say(f"FAILED stage {task.name}: {why}; log: {log}")
        tail = _tail(log, 15)
        if tail:
            print("---- last lines of " + log + " ----\n" + tail + "----", file=sys.stderr, flush=True)
        print(f"{PROG}: stage {task.name} failed; see its log: {log}", file=sys.stderr, flush=True)
        return 1

    def run(self) -> int:
        self.say(f"{len(self.tasks)} tasks, launcher {self.launcher}, output {self.out}")
        todo, will_run = [], set()
        for t in self.tasks:
            # a probe, conversion or fine-tuning whose checkpoint is about to be written anew is asked again
            # when its turn comes (freshness.py): before, it could only be compared with the old one
            complete = t.complete()
            after = sorted(set(t.deps) & will_run) if complete and t.checks_freshness() else []
            if complete and not after:
                self.say(f"skip {t.name}: outputs complete")
            elif t.name in self.recorded:
                self.say(f"skip {t.name}: its result is recorded in {self.records}")
            else:
                if t.name in self.run_again:
                    self.say(f"run {t.name} again: {self.run_again[t.name]}")
                elif after:
                    self.say(f"check {t.name} after {', '.join(after)}: its outputs must be of the checkpoint "
                             "written then")
                todo.append(t)
                will_run.add(t.name)
        self._say_accumulated()
        # refuse now what this machine would refuse later (a dry run only says so)
        refusals = [self._outdated_results(todo), refusal_on_this_machine(todo, self.launcher)]
        refusal = "; ".join(filter(None, refusals))
        if self.dry_run:
            for t in todo:
                self.say(f"would run {t.name}: objcrop {' '.join(shlex.quote(a) for a in t.cmd + t.tail)}")
            if refusal:
                self.say(f"warning: a run would stop before starting anything: {refusal}")
            return 0
        if refusal:
            raise PipelineError(refusal)
        if self.launcher == "local":
            return self._run_local(todo)
        from objcrop.pipeline.slurm import run_submitit

        return run_submitit(self, todo)

    def _say_accumulated(self) -> None:
        """How far the accumulating runs (a registered arm's seeds, recorded over several sessions) have got."""
        runs = [t for t in self.tasks if t.accumulating and t.stage == "pretrain"]
        if runs and self.records:
            done = sum(t.name in self.accumulated for t in runs)
            self.say(f"accumulating runs: {done} of {len(runs)} recorded in {self.records}")

    # ---- local: each task in its own process, up to `jobs` at once, in plan order
    def _outdated_results(self, todo: List[Task]) -> str:
        """Why some result folders (a probe's, a fine-tuning's) cannot be run into: they hold a result of
        another training of their backbone, which is refused, not overwritten (only its owner knows whether
        to keep it). A .pkl converted from another training only feeds others: it is converted again when
        its turn comes (freshness.py)."""
        outdated = {t.name: t.outdated() for t in todo if t.results}
        refused = [f"{name}: {why[0]}" for name, why in outdated.items() if why]
        if not refused:
            return ""
        return (f"{len(refused)} result folder(s) hold a result of another training of their backbone (it was "
                f"trained again after they ran): {'; '.join(refused)}. Move or remove each folder to "
                f"measure the backbone as it is now; nothing was run")

    def _run_local(self, todo: List[Task]) -> int:
        old = signal.signal(signal.SIGTERM, self._on_sigterm)
        pending, running, done = list(todo), {}, set()
        in_this_run = {t.name for t in todo}  # other dependencies were complete before the run began
        failed, lost = 0, set()  # lost: tasks that failed, and (with --keep-going) those that needed them
        try:
            while pending or running:
                if self.keep_going:
                    self._drop_dependents(pending, lost)
                if not (failed and not self.keep_going):
                    for t in self._start_ready(pending, running, done, in_this_run):  # refused, not started
                        failed = failed or 1
                        lost.add(t.name)
                if not running:
                    break
                t, child, start = running.pop(self._wait_any(running))
                if self._finish(t, child.returncode, start) != 0:
                    failed = failed or 1
                    lost.add(t.name)
                else:
                    done.add(t.name)
        except KeyboardInterrupt:
            for t, child, _ in running.values():
                self._stop(child)
                self.say(f"interrupted during {t.name}; rerun the same command to continue from here")
            return 130
        finally:
            signal.signal(signal.SIGTERM, old)
        if failed and self.keep_going:
            self.say(f"{len(lost)} task(s) failed or were not run for want of a failed one: {', '.join(sorted(lost))}")
        return failed

    def _start_ready(self, pending: List[Task], running: Dict[str, Any], done: Set[str],
                     in_this_run: Set[str]) -> List[Task]:
        """Start what is ready: every dependency in this run has finished (the rest were complete);
        a ready probe goes first, so that each run's score arrives soon after its pretraining. Returns
        the probes and fine-tunings refused instead: their folder holds a result of the training just replaced."""
        refused = []
        ready = [t for t in sorted(pending, key=lambda x: x.stage != "probe")
                 if all(d in done for d in t.deps if d in in_this_run)]
        for i, t in enumerate(ready):
            if len(running) >= self.jobs:
                return refused
            pending.remove(t)
            if t.complete():  # finished meanwhile (e.g. by hand, or by another pipeline)
                self.say(f"skip {t.name}: outputs complete")
                done.add(t.name)
                continue
            outdated = t.outdated()  # of a checkpoint written in this run (freshness.py)
            if outdated and t.results:  # a result: refused, not overwritten
                self.say(f"FAILED stage {t.name}: {outdated[0]}. Move or remove its folder to measure the "
                         "backbone as it is now")
                refused.append(t)
                continue
            for why in outdated:
                self.say(f"run {t.name} again: {why}")
            # the cores are split between the tasks that will run side by side now, so that a task
            # alone (the first, the last, one on the critical path) gets all of them, not cores / jobs
            side_by_side = min(self.jobs, len(running) + len(ready) - i)
            running[t.name] = (t, self._start(t, side_by_side), time.time())
        return refused

    def _drop_dependents(self, pending: List[Task], lost: Set[str]) -> None:
        """--keep-going: a task that needs a lost one cannot run; it is lost too (and so on down the graph)."""
        while True:
            dropped = [t for t in pending if any(d in lost for d in t.deps)]
            if not dropped:
                return
            for t in dropped:
                pending.remove(t)
                lost.add(t.name)
                self.say(f"not run {t.name}: it needs {', '.join(d for d in t.deps if d in lost)}, which failed")

    def _start(self, t: Task, side_by_side: int = 1) -> subprocess.Popen:
        argv = objcrop_argv(t)
        log = self.log_path(t)
        env = dict(os.environ)
        threads = ""
        if self.jobs > 1 and "OMP_NUM_THREADS" not in env:
            # tasks side by side share the cores instead of each taking all of them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // side_by_side))
            threads = f", {env['OMP_NUM_THREADS']} thread(s)"
        self.say(f"run {t.name}: {' '.join(shlex.quote(a) for a in argv[1:])} (log: {log}{threads})")
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"\n[pipeline] {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(shlex.quote(a) for a in argv)}\n")
            f.flush()
            return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=tasks_mod.REPO, env=env)

    @staticmethod
    def _wait_any(running: Dict[str, Any]) -> str:
        while True:
            for name, (_, child, _) in running.items():
                if child.poll() is not None:
                    return name
            time.sleep(0.2)

    def _finish(self, t: Task, rc: int, start: float) -> int:
        if rc != 0:
            return self.fail(t, f"exit code {rc}")
        if not t.outputs_complete():
            return self.fail(t, "it exited 0 but its outputs are incomplete: " + ", ".join(t.incomplete_outputs()))
        self.say(f"done {t.name} in {time.time() - start:.0f} s")
        return 0

    @staticmethod
    def _stop(child: subprocess.Popen) -> None:
        if child.poll() is None:
            child.terminate()  # the stage cleans up (e.g. DDP workers) on SIGTERM
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()

    def _on_sigterm(self, signum, frame):
        raise KeyboardInterrupt


def _tail(path: str, n: int) -> str:
    if not os.path.isfile(path):
        return ""
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        lines = f.read().replace("\r", "\n").splitlines()
    lines = [ln for ln in lines if ln.strip()]
    return "\n".join(lines[-n:]) + "\n" if lines else ""
