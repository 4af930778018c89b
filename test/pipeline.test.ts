// Direct tests of one signal's export pipeline: a fake exporter answers each attempt from a
// script, and node:test's mock timers stand in for setTimeout and Date, so every wait below is
// the fake clock advancing, never wall-clock time.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { backoffDelay } from '../src/pipeline/backoff.js';
import { LOSS_REASONS, type AttemptResult, type LossReason } from '../src/pipeline/outcome.js';
import { SignalPipeline, type PipelineSettings } from '../src/pipeline/signal-pipeline.js';

const T0 = 1_000_000;

const OK: AttemptResult = { ok: true };
const RETRY: AttemptResult = { ok: false, retryable: true, error: 'unavailable', unreachable: true };
const PERMANENT: AttemptResult = { ok: false, retryable: false, error: 'invalid argument' };

const SETTINGS: PipelineSettings = {
  capacity: 100,
  maxBatch: 2,
  maxDelayMs: 100,
  initialBackoffMs: 100,
  maxBackoffMs: 1_000,
  maxElapsedMs: 60_000,
};

/** One scripted answer: a result after `latencyMs` of fake time (0: in the same turn), or no answer until released. */
type Step = { result: AttemptResult; latencyMs?: number } | 'hang';

interface Call {
  batch: number[];
  at: number;
}

/** A BatchSender answering attempts from a script (then as `otherwise` says), recording each call. */
class FakeExporter {
  readonly calls: Call[] = [];
  inFlight = 0;
  maxInFlight = 0;
  /** The answer once the script is used up. */
  otherwise: () => Step = () => ({ result: OK });
  private readonly script: Step[] = [];
  private readonly hung: Array<(r: AttemptResult) => void> = [];

  get hanging(): number {
    return this.hung.length;
  }

  answer(...steps: Array<Step | AttemptResult>): this {
    for (const s of steps) this.script.push(s === 'hang' || 'result' in s ? s : { result: s });
    return this;
  }

  /** Answers the oldest attempt that was scripted to hang. */
  release(result: AttemptResult = OK): void {
    const resolve = this.hung.shift();
    assert.ok(resolve, 'no hanging attempt to release');
    resolve(result);
  }

  get batches(): number[][] {
    return this.calls.map((c) => c.batch);
  }

  get times(): number[] {
    return this.calls.map((c) => c.at - T0);
  }

  readonly send = (batch: number[]): Promise<AttemptResult> => {
    this.calls.push({ batch: [...batch], at: Date.now() });
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    const step = this.script.shift() ?? this.otherwise();
    // An answer given at once is an already resolved promise, as an async function's would be.
    return new Promise<AttemptResult>((resolve) => {
      const answer = (result: AttemptResult) => {
        this.inFlight--;
        resolve(result);
      };
      if (step === 'hang') this.hung.push(answer);
      else if (step.latencyMs) setTimeout(() => answer(step.result), step.latencyMs);
      else answer(step.result);
    });
  };
}

/** Runs everything already due: all pending promise reactions, without moving the fake clock. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Moves the fake clock one millisecond at a time, letting the pipeline react after each step. */
async function advance(ms: number): Promise<void> {
  await settle();
  for (let i = 0; i < ms; i++) {
    mock.timers.tick(1);
    await settle();
  }
}

/** Advances the fake clock to `T0 + ms`. */
async function advanceTo(ms: number): Promise<void> {
  assert.ok(Date.now() <= T0 + ms, `the fake clock is already past T0+${ms}`);
  await advance(T0 + ms - Date.now());
}

/** Asserts that `p` is still pending at `T0 + ms - 1` and has settled at `T0 + ms`; returns its value. */
async function settlesAt<T>(p: Promise<T>, ms: number): Promise<T> {
  const state = track(p);
  await advanceTo(ms - 1);
  assert.equal(state.done, false, `still pending at T0+${ms - 1}`);
  await advanceTo(ms);
  assert.equal(state.done, true, `settled at T0+${ms}`);
  return state.value as T;
}

/** Asserts that `p` settles without the fake clock moving; returns its value. */
async function settlesNow<T>(p: Promise<T>): Promise<T> {
  const state = track(p);
  await settle();
  assert.equal(state.done, true, 'settled at once');
  return state.value as T;
}

/** A promise whose settlement the test can look at without awaiting it. */
function track<T>(p: Promise<T>): { done: boolean; value: T | undefined } {
  const state: { done: boolean; value: T | undefined } = { done: false, value: undefined };
  void p.then((v) => {
    state.done = true;
    state.value = v;
  });
  return state;
}

function losses(counts: Partial<Record<LossReason, number>> = {}): Record<LossReason, number> {
  return Object.fromEntries(LOSS_REASONS.map((r) => [r, counts[r] ?? 0])) as Record<LossReason, number>;
}

/** Draws Math.random returns, in order, for backoff jitter (0 once they run out: the lower edge). */
let draws: number[] = [];

function setup(settings: Partial<PipelineSettings> = {}) {
  const exporter = new FakeExporter();
  const attempts: Array<{ result: AttemptResult; seconds: number }> = [];
  const p = new SignalPipeline<number>({ ...SETTINGS, ...settings }, exporter.send, (result, seconds) => attempts.push({ result, seconds }));
  let offered = 0;
  return {
    p,
    exporter,
    attempts,
    /** Offers the next `n` item numbers (1, 2, ...) and returns whether each was accepted. */
    offer(n = 1): boolean[] {
      const accepted: boolean[] = [];
      for (let i = 0; i < n; i++) accepted.push(p.offer(++offered));
      return accepted;
    },
    /** Every item offered is exported, lost for one reason, or still held: exactly once. */
    conserved(): void {
      assert.equal(p.lostTotal, Object.values(p.lost).reduce((a, b) => a + b, 0), 'lostTotal sums lost');
      assert.equal(p.exported + p.lostTotal + p.size, offered, `exported ${p.exported} + lost ${p.lostTotal} + held ${p.size} = offered ${offered}`);
    },
    /** The pipeline's counters at the end of a scenario (and conservation). */
    expect(exported: number, lost: Partial<Record<LossReason, number>>, size: number): void {
      assert.deepEqual({ exported: p.exported, lost: p.lost, size: p.size }, { exported, lost: losses(lost), size });
      this.conserved();
    },
  };
}

/** One item whose first attempt failed at T0+10 and now waits a 500 ms backoff, the clock at T0+`now`; `answers` follow. */
async function waitingBackoff(now: number, ...answers: AttemptResult[]) {
  const h = setup({ maxDelayMs: 10, initialBackoffMs: 1_000, maxBackoffMs: 1_000 });
  h.exporter.answer(RETRY, ...answers);
  h.offer(1);
  await advanceTo(now);
  assert.deepEqual(h.exporter.times, [10]);
  return h;
}

beforeEach(() => {
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 });
  draws = [];
  mock.method(Math, 'random', () => draws.shift() ?? 0);
});

afterEach(() => {
  mock.timers.reset();
  mock.restoreAll();
});

describe('backoffDelay', () => {
  const s = { initialBackoffMs: 100, maxBackoffMs: 500 };

  it('draws from the upper half of a ceiling that doubles per attempt up to the maximum', () => {
    const range = (attempt: number) => [backoffDelay(attempt, s, () => 0), backoffDelay(attempt, s, () => 0.5), backoffDelay(attempt, s, () => 1)];
    assert.deepEqual(range(0), [50, 75, 100]);
    assert.deepEqual(range(1), [100, 150, 200]);
    assert.deepEqual(range(2), [200, 300, 400]);
    assert.deepEqual(range(3), [250, 375, 500]);
    assert.deepEqual(range(10_000), [250, 375, 500], 'a huge attempt number stays at the maximum');
  });
});

describe('SignalPipeline', () => {
  describe('bounded queue', () => {
    it('refuses the newest items as queue_full once queued plus in-flight items reach capacity', async () => {
      const h = setup({ capacity: 4, maxBatch: 2 });
      h.exporter.answer('hang');
      assert.deepEqual(h.offer(2), [true, true]);
      await settle();
      assert.deepEqual(h.exporter.batches, [[1, 2]]);
      assert.deepEqual(h.offer(4), [true, true, false, false], 'two in flight and two queued fill a capacity of 4');
      assert.equal(h.p.capacity, 4);
      h.expect(0, { queue_full: 2 }, 4);

      h.exporter.release(OK);
      await settle();
      assert.deepEqual(h.exporter.batches, [[1, 2], [3, 4]], 'the refused items 5 and 6 are never sent');
      h.expect(4, { queue_full: 2 }, 0);
      assert.deepEqual(h.offer(1), [true], 'room again once exported');
      h.conserved();
    });

    it('keeps items in offer order while its ring grows and wraps', async () => {
      const h = setup({ capacity: 1_000, maxBatch: 50 });
      h.offer(130);
      await settle();
      assert.deepEqual(h.exporter.batches.map((b) => b.length), [50, 50], 'full batches go at once');
      h.conserved();
      await advance(SETTINGS.maxDelayMs);
      assert.deepEqual(h.exporter.batches.map((b) => b.length), [50, 50, 30]);
      assert.deepEqual(h.exporter.batches.flat(), Array.from({ length: 130 }, (_, i) => i + 1));
      h.expect(130, {}, 0);
    });
  });

  describe('batching', () => {
    it('sends a full batch at once, without waiting for maxDelayMs', async () => {
      const h = setup({ maxBatch: 3 });
      h.offer(2);
      await settle();
      assert.equal(h.exporter.calls.length, 0);
      h.offer(1);
      await settle();
      assert.deepEqual(h.exporter.calls, [{ batch: [1, 2, 3], at: T0 }]);
      h.expect(3, {}, 0);
    });

    it('sends a partial batch maxDelayMs after its first item, with the items that came meanwhile', async () => {
      const h = setup({ maxBatch: 10, maxDelayMs: 100 });
      h.offer(1);
      await advanceTo(40);
      h.offer(1);
      await advanceTo(99);
      assert.equal(h.exporter.calls.length, 0);
      h.expect(0, {}, 2);
      await advanceTo(100);
      assert.deepEqual(h.exporter.calls, [{ batch: [1, 2], at: T0 + 100 }]);
      h.expect(2, {}, 0);
    });

    it('after an export, sends the full batches that queued meanwhile back to back, then the rest after maxDelayMs', async () => {
      const h = setup({ maxBatch: 2, maxDelayMs: 100 });
      h.exporter.answer({ result: OK, latencyMs: 10 }, { result: OK, latencyMs: 10 }, { result: OK, latencyMs: 10 });
      h.offer(2);
      h.offer(3);
      await advanceTo(200);
      assert.deepEqual(h.exporter.batches, [[1, 2], [3, 4], [5]]);
      assert.deepEqual(h.exporter.times, [0, 10, 120]);
      assert.equal(h.exporter.maxInFlight, 1);
      h.expect(5, {}, 0);
    });

    it('keeps exactly one export in flight, whatever the backlog, flushes included', async () => {
      const h = setup({ maxBatch: 1, maxDelayMs: 10 });
      h.exporter.answer('hang', 'hang', 'hang');
      h.offer(3);
      await advanceTo(1_000);
      void h.p.flush(T0 + 2_000);
      await advanceTo(1_500);
      assert.equal(h.exporter.calls.length, 1);
      h.expect(0, {}, 3);
      for (let i = 1; i <= 3; i++) {
        h.exporter.release(OK);
        await advance(20);
        assert.equal(h.exporter.calls.length, Math.min(i + 1, 3));
        h.expect(i, {}, 3 - i);
      }
      assert.equal(h.exporter.maxInFlight, 1);
    });
  });

  describe('retries', () => {
    it('retries a retryable failure after equal-jitter backoff, the ceiling doubling up to maxBackoffMs', async () => {
      const h = setup({ maxBatch: 1, initialBackoffMs: 100, maxBackoffMs: 300 });
      h.exporter.answer(RETRY, RETRY, RETRY, RETRY, OK);
      // Ceilings 100, 200, 300 (not 400), 300; each delay is ceiling / 2 + draw * ceiling / 2.
      draws = [0, 0.5, 0, 0.5];
      h.offer(1);
      await advanceTo(1_000);
      assert.deepEqual(h.exporter.times, [0, 50, 200, 350, 575]);
      assert.equal(h.p.retries, 4);
      h.expect(1, {}, 0);
      assert.deepEqual(
        h.attempts.map((a) => a.result),
        [RETRY, RETRY, RETRY, RETRY, OK],
        'the observer is told of every attempt',
      );
      for (const a of h.attempts) assert.ok(a.seconds >= 0 && Number.isFinite(a.seconds));
    });

    it('holds a retrying batch in size, against capacity, until it is done', async () => {
      const h = setup({ capacity: 3, maxBatch: 2, initialBackoffMs: 100 });
      h.exporter.answer(RETRY, OK);
      h.offer(2);
      await advanceTo(10);
      assert.deepEqual(h.offer(2), [true, false]);
      h.expect(0, { queue_full: 1 }, 3);
      await advanceTo(200);
      h.expect(3, { queue_full: 1 }, 0);
      assert.deepEqual(h.exporter.batches, [[1, 2], [1, 2], [3]]);
    });

    it('loses a batch refused by a permanent error at once as permanent_error, then goes on', async () => {
      const h = setup({ maxBatch: 2 });
      h.exporter.answer(PERMANENT, OK);
      h.offer(4);
      await settle();
      assert.deepEqual(h.exporter.batches, [[1, 2], [3, 4]]);
      assert.equal(h.p.retries, 0);
      h.expect(2, { permanent_error: 2 }, 0);
      assert.deepEqual(
        h.attempts.map((a) => a.result),
        [PERMANENT, OK],
      );
    });

    it('gives a batch up as retries_exhausted when its next attempt would start past maxElapsedMs, export time included', async () => {
      const h = setup({ maxBatch: 2, maxDelayMs: 100, initialBackoffMs: 100, maxBackoffMs: 100, maxElapsedMs: 200 });
      // Each attempt takes 20 ms and each backoff is 50 ms: attempts start at 0, 70, 140; the
      // next would start at 160 + 50 = 210 > 200.
      const slowRetry = { result: RETRY, latencyMs: 20 };
      h.exporter.answer(slowRetry, slowRetry, slowRetry);
      h.offer(3);
      await advanceTo(159);
      assert.deepEqual(h.exporter.times, [0, 70, 140]);
      h.expect(0, {}, 3);
      await advanceTo(160);
      h.expect(0, { retries_exhausted: 2 }, 1);
      assert.equal(h.p.retries, 2);

      // The next batch has a budget of its own, counted from its own first attempt.
      h.exporter.answer(RETRY, RETRY, OK);
      await advanceTo(1_000);
      assert.deepEqual(h.exporter.times, [0, 70, 140, 260, 310, 360]);
      assert.deepEqual(h.exporter.batches.slice(3), [[3], [3], [3]]);
      assert.equal(h.p.retries, 4);
      h.expect(1, { retries_exhausted: 2 }, 0);
    });
  });

  describe('flush', () => {
    it('exports everything queued, partial batches included, and returns as soon as that is done', async () => {
      const h = setup({ maxBatch: 2, maxDelayMs: 10_000 });
      const slow = { result: OK, latencyMs: 5 };
      h.exporter.answer(slow, slow);
      h.offer(3);
      assert.equal(await settlesAt(h.p.flush(T0 + 1_000), 10), 3);
      assert.deepEqual(h.exporter.batches, [[1, 2], [3]]);
      h.expect(3, {}, 0);
    });

    it('returns at its deadline with a hanging export still held in size', async () => {
      const h = setup({ maxDelayMs: 10 });
      h.exporter.answer('hang');
      h.offer(1);
      assert.equal(await settlesAt(h.p.flush(T0 + 100), 100), 0);
      h.expect(0, {}, 1);
      h.exporter.release(OK);
      await settle();
      h.expect(1, {}, 0);
    });

    it('returns at its deadline while the batch waits out a backoff', async () => {
      const h = await waitingBackoff(10, RETRY);
      assert.equal(await settlesAt(h.p.flush(T0 + 300), 300), 0);
      assert.deepEqual(h.exporter.times, [10, 10], 'the flush retried at once, then the second failure waits its backoff');
      assert.equal(h.p.retries, 1, 'only attempts made are counted');
      h.expect(0, {}, 1);
    });

    it('cuts a backoff wait short and retries at once', async () => {
      const h = await waitingBackoff(20);
      assert.equal(await settlesNow(h.p.flush(T0 + 5_000)), 1);
      assert.deepEqual(h.exporter.times, [10, 20]);
      assert.equal(h.p.retries, 1);
      h.expect(1, {}, 0);
    });

    it('with its deadline passed, leaves a backoff wait alone', async () => {
      const h = await waitingBackoff(20);
      assert.equal(await settlesNow(h.p.flush(T0 + 20)), 0);
      assert.deepEqual(h.exporter.times, [10], 'the retry still waits its backoff');
      await advanceTo(510);
      assert.deepEqual(h.exporter.times, [10, 510]);
      h.expect(1, {}, 0);
    });

    it('returns 0 at once, sending nothing, when its deadline has passed or nothing is held', async () => {
      const h = setup({ maxDelayMs: 100 });
      assert.equal(await settlesNow(h.p.flush(T0 + 1_000)), 0, 'nothing held');
      h.offer(1);
      assert.equal(await settlesNow(h.p.flush(T0)), 0, 'deadline now');
      assert.equal(h.exporter.calls.length, 0);
      h.expect(0, {}, 1);
    });
  });

  describe('close', () => {
    it('flushes first and, when everything went out, loses nothing', async () => {
      const h = setup({ maxBatch: 2, maxDelayMs: 10_000 });
      h.offer(3);
      assert.equal(await settlesNow(h.p.close(T0 + 1_000, 'shutdown')), 3);
      h.expect(3, {}, 0);
    });

    it('counts queued and in-flight items as lost for its reason, once, even when the hanging export answers later', async () => {
      const h = setup({ maxBatch: 2 });
      h.exporter.answer('hang');
      h.offer(5);
      await settle();
      h.expect(0, {}, 5);
      assert.equal(await settlesAt(h.p.close(T0 + 50, 'disabled'), 50), 0);
      h.expect(0, { disabled: 5 }, 0);

      h.exporter.release(OK);
      await advanceTo(10_000);
      assert.equal(h.attempts.length, 1, 'the observer still hears the late answer');
      assert.equal(h.exporter.calls.length, 1, 'nothing more is sent');
      h.expect(0, { disabled: 5 }, 0);
    });

    // The exporter answers in the same turn as the offer that filled the batch, and close() runs
    // in that turn too: the answer and close()'s accounting race through microtasks.
    for (const [outcome, answer] of [
      ['exported', OK],
      ['permanent_error', PERMANENT],
      ['retries_exhausted', RETRY],
    ] as const) {
      it(`counts a batch that ends as ${outcome} in the same turn as close() once, not also as shutdown`, async () => {
        const h = setup({ maxBatch: 2, maxElapsedMs: 0 });
        h.exporter.answer(answer);
        h.offer(2);
        await settlesNow(h.p.close(T0, 'shutdown'));
        assert.equal(h.exporter.calls.length, 1);
        assert.equal(h.p.size, 0);
        h.conserved();
      });
    }

    it('ends the retries of a batch waiting out a backoff, sending nothing more', async () => {
      const h = await waitingBackoff(20);
      assert.equal(await settlesNow(h.p.close(T0 + 20, 'shutdown')), 0);
      h.expect(0, { shutdown: 1 }, 0);
      await advanceTo(10_000);
      assert.equal(h.exporter.calls.length, 1);
      assert.equal(h.p.retries, 0, 'no attempt was repeated');
      h.expect(0, { shutdown: 1 }, 0);
    });

    for (const reason of ['shutdown', 'disabled'] as const) {
      it(`refuses items offered after close(${reason}), counting them as lost for ${reason}`, async () => {
        const h = setup();
        await settlesNow(h.p.close(T0, reason));
        assert.deepEqual(h.offer(2), [false, false]);
        h.expect(0, { [reason]: 2 }, 0);
        await advanceTo(1_000);
        assert.equal(h.exporter.calls.length, 0);
      });
    }

    it('accepts and exports items again after reopen', async () => {
      const h = setup({ maxDelayMs: 100 });
      h.offer(1);
      await settlesNow(h.p.close(T0, 'disabled'));
      h.p.reopen();
      h.offer(1);
      await advanceTo(100);
      assert.deepEqual(h.exporter.calls, [{ batch: [2], at: T0 + 100 }]);
      h.expect(1, { disabled: 1 }, 0);
    });

    it('after reopen, a hanging export from before close keeps the one export slot, and its answer is not counted', async () => {
      const h = setup({ maxDelayMs: 100 });
      h.exporter.answer('hang');
      h.offer(1);
      await advanceTo(100);
      await settlesNow(h.p.close(T0 + 100, 'disabled'));
      h.p.reopen();
      h.offer(1);
      await advanceTo(1_000);
      assert.equal(h.exporter.calls.length, 1);
      h.expect(0, { disabled: 1 }, 1);
      h.exporter.release(OK);
      await advanceTo(1_099);
      assert.equal(h.exporter.calls.length, 1, 'the new item waits maxDelayMs from when the slot came free');
      await advanceTo(1_100);
      assert.deepEqual(h.exporter.batches, [[1], [2]]);
      assert.equal(h.exporter.maxInFlight, 1);
      h.expect(1, { disabled: 1 }, 0);
    });
  });

  describe('configure', () => {
    it('a smaller capacity refuses new items without evicting held ones; maxBatch and maxDelayMs apply from the next batch', async () => {
      const h = setup({ capacity: 10, maxBatch: 5, maxDelayMs: 100 });
      h.exporter.answer('hang');
      h.offer(9);
      await settle();
      assert.deepEqual(h.exporter.batches, [[1, 2, 3, 4, 5]]);
      h.p.configure({ ...SETTINGS, capacity: 6, maxBatch: 2, maxDelayMs: 30 });
      assert.equal(h.p.capacity, 6);
      assert.deepEqual(h.offer(1), [false]);
      h.expect(0, { queue_full: 1 }, 9);

      h.exporter.release(OK);
      await settle();
      assert.deepEqual(h.exporter.batches, [[1, 2, 3, 4, 5], [6, 7], [8, 9]]);
      h.expect(9, { queue_full: 1 }, 0);

      const now = Date.now() - T0;
      h.offer(1);
      await advanceTo(now + 29);
      assert.equal(h.exporter.calls.length, 3);
      await advanceTo(now + 30);
      assert.deepEqual(h.exporter.batches.at(-1), [11]);
      h.expect(10, { queue_full: 1 }, 0);
    });

    it('a larger capacity takes items at once, even from a capacity of 0', async () => {
      const h = setup({ capacity: 0, maxBatch: 10, maxDelayMs: 100 });
      assert.deepEqual(h.offer(1), [false]);
      h.p.configure({ ...SETTINGS, capacity: 3, maxBatch: 10, maxDelayMs: 100 });
      assert.deepEqual(h.offer(4), [true, true, true, false]);
      h.expect(0, { queue_full: 2 }, 3);
      await advanceTo(100);
      assert.deepEqual(h.exporter.batches, [[2, 3, 4]]);
      h.expect(3, { queue_full: 2 }, 0);
    });
  });

  describe('accounting under random interleavings', () => {
    /** mulberry32: a small seeded generator, so every run replays the same operations. */
    function seeded(seed: number): () => number {
      let a = seed >>> 0;
      return () => {
        a = (a + 0x6d2b79f5) >>> 0;
        let t = a;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
      };
    }

    for (let seed = 1; seed <= 12; seed++) {
      it(`keeps every item accounted exactly once, with one export in flight (seed ${seed})`, async () => {
        const rnd = seeded(seed);
        const pick = <V>(...options: V[]): V => options[Math.floor(rnd() * options.length)]!;
        const upTo = (n: number) => Math.floor(rnd() * (n + 1));
        const randomSettings = (): PipelineSettings => ({
          capacity: 1 + upTo(12),
          maxBatch: 1 + upTo(4),
          maxDelayMs: upTo(20),
          initialBackoffMs: 1 + upTo(20),
          maxBackoffMs: 20 + upTo(40),
          maxElapsedMs: upTo(120),
        });
        const h = setup(randomSettings());
        h.exporter.otherwise = () =>
          pick<Step>('hang', { result: OK }, { result: OK, latencyMs: 1 + upTo(15) }, { result: RETRY, latencyMs: upTo(5) }, { result: PERMANENT });
        const log: string[] = [];
        const op = async (name: string, run: () => unknown) => {
          log.push(`T0+${Date.now() - T0} ${name}`);
          await run();
          // Now and then the next operation comes in the same turn, before pending answers are read.
          if (rnd() < 0.7) await settle();
          assert.ok(h.exporter.maxInFlight <= 1, `two exports in flight after: ${log.join('; ')}`);
          try {
            h.conserved();
          } catch (err) {
            throw new Error(`after: ${log.join('; ')}`, { cause: err });
          }
        };
        for (let step = 0; step < 150; step++) {
          const r = rnd();
          if (r < 0.3) await op('offer', () => h.offer(1 + upTo(4)));
          else if (r < 0.55) await op('advance', () => advance(1 + upTo(25)));
          else if (r < 0.7 && h.exporter.hanging > 0) {
            const result = pick<AttemptResult>(OK, RETRY, PERMANENT);
            await op(`release ${JSON.stringify(result)}`, () => h.exporter.release(result));
          } else if (r < 0.78) await op('flush', () => void h.p.flush(Date.now() + upTo(30)));
          else if (r < 0.84) await op('close', () => void h.p.close(Date.now() + upTo(10), pick('shutdown', 'disabled')));
          else if (r < 0.92) await op('reopen', () => h.p.reopen());
          else await op('configure', () => h.p.configure(randomSettings()));
        }
        // Wind down: answer what hangs, close for good, and answer what hung meanwhile.
        while (h.exporter.hanging > 0) await op('release', () => h.exporter.release(OK));
        await op('close', () => void h.p.close(Date.now(), 'shutdown'));
        while (h.exporter.hanging > 0) await op('release', () => h.exporter.release(OK));
        await op('advance', () => advance(200));
        assert.equal(h.p.size, 0, 'nothing held after close');
        h.conserved();
      });
    }
  });
});
