/**
 * prom-client finds a labelled child by hashing its label object on every call; on the
 * request path that costs more than the increment. This remembers each child under a key
 * the caller builds cheaply. Children stay valid as long as their metric is never reset,
 * so only use it for metrics that are not.
 */
export function childCache<C>(
  childFor: (labels: Record<string, string>) => C,
  maxChildren = 20_000,
): (key: string, labels: () => Record<string, string>) => C {
  const children = new Map<string, C>();
  return (key, labels) => {
    let child = children.get(key);
    if (child === undefined) {
      // Bounded: forgetting a child only costs a lookup; prom-client keeps its value.
      if (children.size >= maxChildren) children.clear();
      child = childFor(labels());
      children.set(key, child);
    }
    return child;
  };
}
