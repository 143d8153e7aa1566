// One queue of main-thread work, run in animation frames with a time budget, so a busy second
// (100 tiles and seven charts to refresh) becomes many short tasks instead of one long one.

const BUDGET_MS = 8;

export class Frames {
  constructor() {
    this.jobs = new Map(); // key → function; a key queued twice runs once
    this.frame = 0;
    this.idle = [];
  }

  /** Run `fn` in a coming frame; a later call with the same key replaces it. */
  queue(key, fn) {
    this.jobs.set(key, fn);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.run());
  }

  get pending() {
    return this.jobs.size > 0;
  }

  /** Call `fn` whenever the queue runs empty. */
  onIdle(fn) {
    this.idle.push(fn);
  }

  run() {
    this.frame = 0;
    const start = performance.now();
    for (const [key, fn] of this.jobs) {
      this.jobs.delete(key);
      fn();
      if (performance.now() - start > BUDGET_MS) break;
    }
    if (this.jobs.size) this.frame = requestAnimationFrame(() => this.run());
    else for (const fn of this.idle) fn();
  }
}
