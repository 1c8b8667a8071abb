/**
 * A small typed event emitter (no Node `events`: the package runs in React Native and browsers).
 */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Listener = (...args: any[]) => void;
export type EventMap = { [event: string]: Listener };

export class Emitter<Events extends EventMap> {
  private readonly listeners = new Map<keyof Events, Set<Listener>>();

  /** Adds a listener; answers a function that removes it. */
  on<E extends keyof Events>(event: E, listener: Events[E]): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  /** Adds a listener called at most once. */
  once<E extends keyof Events>(event: E, listener: Events[E]): () => void {
    const wrapped = ((...args: Parameters<Events[E]>) => {
      off();
      listener(...args);
    }) as Events[E];
    const off = this.on(event, wrapped);
    return off;
  }

  off<E extends keyof Events>(event: E, listener: Events[E]): void {
    this.listeners.get(event)?.delete(listener);
  }

  protected emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (err) {
        // A throwing listener must not break the client's bookkeeping (the next event still has
        // to be applied); the error is rethrown outside, where the app's error reporting sees it.
        setTimeout(() => {
          throw err;
        }, 0);
      }
    }
  }

  protected hasListeners(event: keyof Events): boolean {
    return (this.listeners.get(event)?.size ?? 0) > 0;
  }

  protected removeAllListeners(): void {
    this.listeners.clear();
  }
}
