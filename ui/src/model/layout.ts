/**
 * A layered left-to-right layout that never moves a card once it is placed: new nodes take the
 * column after their furthest-left known sender (senders with no sender of their own start at
 * column 0) and the next free row of that column. Flows arriving later add cards and edges but
 * never shift what the user is looking at. `reset()` (a filter change) lays out afresh.
 */
export interface LayoutNode {
  id: string;
  namespace?: string;
  name: string;
}

export interface LayoutEdge {
  from: string;
  to: string;
}

export interface Box {
  x: number;
  y: number;
  col: number;
  row: number;
}

export const CARD_W = 230;
export const CARD_H = 76;
export const GAP_X = 210;
export const GAP_Y = 64;
export const PAD = 24;
const MAX_COL = 8;

export class StableLayout {
  private placed = new Map<string, Box>();
  private nextRow: number[] = [];

  reset(): void {
    this.placed.clear();
    this.nextRow = [];
  }

  get size(): { width: number; height: number } {
    let cols = 0;
    let rows = 0;
    for (const b of this.placed.values()) {
      cols = Math.max(cols, b.col + 1);
      rows = Math.max(rows, b.row + 1);
    }
    return { width: PAD * 2 + cols * CARD_W + Math.max(0, cols - 1) * GAP_X, height: PAD * 2 + rows * CARD_H + Math.max(0, rows - 1) * GAP_Y };
  }

  box(id: string): Box | undefined {
    return this.placed.get(id);
  }

  /** Places the nodes not placed yet; returns every node's box. */
  update(nodes: readonly LayoutNode[], edges: readonly LayoutEdge[]): ReadonlyMap<string, Box> {
    const fresh = nodes.filter((n) => !this.placed.has(n.id));
    if (!fresh.length) return this.placed;
    const senders = new Map<string, string[]>();
    for (const e of edges) {
      if (e.from === e.to) continue;
      let l = senders.get(e.to);
      if (!l) senders.set(e.to, (l = []));
      l.push(e.from);
    }
    // Longest path from a source, bounded (cycles stop at MAX_COL passes).
    const col = new Map<string, number>();
    for (const n of fresh) col.set(n.id, 0);
    for (let pass = 0; pass < MAX_COL; pass++) {
      let changed = false;
      for (const n of fresh) {
        let c = 0;
        for (const s of senders.get(n.id) ?? []) {
          const sc = this.placed.get(s)?.col ?? col.get(s);
          if (sc !== undefined) c = Math.max(c, Math.min(MAX_COL, sc + 1));
        }
        if (c !== col.get(n.id)) {
          col.set(n.id, c);
          changed = true;
        }
      }
      if (!changed) break;
    }
    const order = [...fresh].sort((a, b) => (a.namespace ?? '~').localeCompare(b.namespace ?? '~') || a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    for (const n of order) {
      const c = col.get(n.id) ?? 0;
      const row = this.nextRow[c] ?? 0;
      this.nextRow[c] = row + 1;
      this.placed.set(n.id, { col: c, row, x: PAD + c * (CARD_W + GAP_X), y: PAD + row * (CARD_H + GAP_Y) });
    }
    return this.placed;
  }
}
