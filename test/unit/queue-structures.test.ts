import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { IndexedHeap } from "../../extproc/src/queue/indexed-heap.ts";
import { LinkedQueue, type QueueNode } from "../../extproc/src/queue/linked-queue.ts";

describe("LinkedQueue", () => {
  it("pushes, shifts and removes in O(1) with FIFO order", () => {
    const queue = new LinkedQueue<string>();
    assert.equal(queue.shift(), undefined);
    const a = queue.push("a");
    const b = queue.push("b");
    queue.push("c");
    assert.equal(queue.remove(b), true);
    assert.equal(queue.remove(b), false);
    assert.deepEqual([...queue], ["a", "c"]);
    assert.equal(queue.shift(), "a");
    assert.equal(queue.remove(a), false, "a shifted node is no longer linked");
    assert.equal(queue.size, 1);
    assert.equal(queue.peek(), "c");
  });

  it("property: matches an array model under push, shift and remove", () => {
    type Op = { kind: "push" } | { kind: "shift" } | { kind: "remove"; pick: number };
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 3, arbitrary: fc.constant({ kind: "push" as const }) },
      { weight: 1, arbitrary: fc.constant({ kind: "shift" as const }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("remove" as const), pick: fc.nat() }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200, size: "max" }), (ops) => {
        const queue = new LinkedQueue<number>();
        const model: number[] = [];
        // Every node ever pushed, including removed ones (removing those must fail).
        const nodes: QueueNode<number>[] = [];
        let next = 0;
        for (const o of ops) {
          if (o.kind === "push") {
            const value = next++;
            const node = queue.push(value);
            assert.equal(node.value, value);
            nodes.push(node);
            model.push(value);
          } else if (o.kind === "shift") {
            assert.equal(queue.shift(), model.shift());
          } else {
            if (nodes.length === 0) continue;
            const node = nodes[o.pick % nodes.length] as QueueNode<number>;
            const at = model.indexOf(node.value);
            assert.equal(queue.remove(node), at >= 0);
            if (at >= 0) model.splice(at, 1);
          }
          assert.equal(queue.size, model.length);
          assert.equal(queue.peek(), model[0]);
          assert.deepEqual([...queue], model);
        }
        // Draining by shift yields the model's order.
        const drained: number[] = [];
        for (let v = queue.shift(); v !== undefined; v = queue.shift()) drained.push(v);
        assert.deepEqual(drained, model);
        assert.equal(queue.size, 0);
      }),
      { numRuns: 300 },
    );
  });
});

interface Item {
  readonly id: number;
  key: number;
}

/** Strict total order: key, then id. */
const before = (a: Item, b: Item) => a.key < b.key || (a.key === b.key && a.id < b.id);
const sorted = (items: Iterable<Item>) => [...items].sort((a, b) => a.key - b.key || a.id - b.id);

describe("IndexedHeap", () => {
  it("pops in order, updates a changed key and removes from the middle", () => {
    const heap = new IndexedHeap<Item>(before);
    const items = [5, 3, 8, 1, 9].map((key, id) => ({ id, key }));
    for (const item of items) heap.push(item);
    assert.equal(heap.size, 5);
    assert.equal(heap.peek()?.key, 1);
    const eight = items[2] as Item;
    eight.key = 0;
    heap.update(eight);
    assert.equal(heap.peek(), eight);
    assert.equal(heap.remove(items[1] as Item), true);
    assert.equal(heap.remove(items[1] as Item), false);
    assert.equal(heap.has(items[1] as Item), false);
    assert.deepEqual(
      [heap.pop(), heap.pop(), heap.pop(), heap.pop(), heap.pop()].map((i) => i?.key),
      [0, 1, 5, 9, undefined],
    );
  });

  it("property: pop order equals sorted order under push, update, remove and mutable keys", () => {
    type Op =
      | { kind: "push"; key: number }
      | { kind: "repush"; pick: number; key: number }
      | { kind: "update"; pick: number; key: number }
      | { kind: "remove"; pick: number }
      | { kind: "pop" };
    const key = fc.integer({ min: -20, max: 20 });
    const op: fc.Arbitrary<Op> = fc.oneof(
      { weight: 4, arbitrary: fc.record({ kind: fc.constant("push" as const), key }) },
      { weight: 1, arbitrary: fc.record({ kind: fc.constant("repush" as const), pick: fc.nat(), key }) },
      { weight: 3, arbitrary: fc.record({ kind: fc.constant("update" as const), pick: fc.nat(), key }) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("remove" as const), pick: fc.nat() }) },
      { weight: 2, arbitrary: fc.constant({ kind: "pop" as const }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 200, size: "max" }), (ops) => {
        const heap = new IndexedHeap<Item>(before);
        const model = new Set<Item>();
        const all: Item[] = [];
        let nextId = 0;
        for (const o of ops) {
          if (o.kind === "push") {
            const item = { id: nextId++, key: o.key };
            all.push(item);
            heap.push(item);
            model.add(item);
          } else if (o.kind === "repush" || o.kind === "update") {
            if (all.length === 0) continue;
            const item = all[o.pick % all.length] as Item;
            // The key changes in place; the heap learns of it only through push/update.
            item.key = o.key;
            if (o.kind === "repush") {
              // Pushing a present item acts as update; an absent one is (re)inserted.
              heap.push(item);
              model.add(item);
            } else {
              heap.update(item);
            }
          } else if (o.kind === "remove") {
            if (all.length === 0) continue;
            const item = all[o.pick % all.length] as Item;
            assert.equal(heap.remove(item), model.has(item));
            model.delete(item);
          } else {
            const expected = sorted(model)[0];
            assert.equal(heap.pop(), expected);
            if (expected) model.delete(expected);
          }
          assert.equal(heap.size, model.size);
          assert.equal(heap.peek(), sorted(model)[0]);
          for (const item of all) assert.equal(heap.has(item), model.has(item));
          assert.deepEqual(new Set(heap.values()), model);
          assert.deepEqual([...heap.ordered()], sorted(model), "ordered() walks the heap in pop order");
        }
        const popped: Item[] = [];
        for (let item = heap.pop(); item !== undefined; item = heap.pop()) popped.push(item);
        assert.deepEqual(popped, sorted(model));
        assert.equal(heap.size, 0);
      }),
      { numRuns: 300 },
    );
  });
});
