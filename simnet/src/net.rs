//! The flow-level network: links with a capacity and a latency, connections that carry a
//! queue of items across a path of links, and max-min fair sharing.
//!
//! **Connections, not packets.** A [`FlowId`] is a connection (a device's QUIC connection to a
//! peer, a cache's connection to its upstream). It is *active* while it has items queued and
//! sends them in order (first in, first out), each at the connection's current rate; a
//! connection with nothing queued is idle and takes no capacity. So a pipeline of requests
//! that never runs dry keeps one steady flow, and rates are recomputed only when a connection
//! goes active or idle or a link's capacity changes, not at every chunk.
//!
//! **Max-min fairness by progressive filling.** Rates are recomputed for the affected
//! component only: the links touched by a change, closed over links that were saturated
//! (only a saturated link is anybody's bottleneck, so a change cannot reach past an
//! unsaturated one). Flows outside the component keep their rates and their use of the
//! component's links is subtracted first. If filling saturates a link that also carries
//! flows outside the component, the component grows to take them in and is filled again.
//! Completion times live in the network's own indexed heap, one entry per active flow, moved
//! in place when a rate change moves its head item's due time: nothing stale piles up when a
//! crowded link's rates change at every arrival and departure. The caller asks
//! [`Network::next_due`] and takes due items with [`Network::pop_due`].
//!
//! Times are integer microseconds; rates are bytes per second (`f64`, evaluated in a fixed
//! order, so runs are bit-for-bit repeatable).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

/// A link, numbered in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u32);

/// A connection, numbered by the network (slots are reused after [`Network::close`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u32);

/// Something to send: `bytes` long, with an opaque `tag` for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Its size.
    pub bytes: u64,
    /// The caller's label.
    pub tag: u64,
}

#[derive(Debug)]
struct Link {
    capacity: f64,
    latency_us: u64,
    flows: Vec<u32>,
    used: f64,
    saturated: bool,
    carried: f64,
}

#[derive(Debug)]
struct Flow {
    path: Vec<u32>,
    queue: VecDeque<Item>,
    head_left: f64,
    rate: f64,
    since: u64,
    /// When the head item is done at the current rate (`NEVER`: idle or stalled).
    due: u64,
    active: bool,
    open: bool,
}

const NEVER: u64 = u64::MAX;
const NOT_QUEUED: u32 = u32::MAX;
/// A link with more flows than this keeps its use up to date by differences.
const CROWDED: usize = 64;

impl Default for Flow {
    fn default() -> Self {
        Self {
            path: Vec::new(),
            queue: VecDeque::new(),
            head_left: 0.0,
            rate: 0.0,
            since: 0,
            due: NEVER,
            active: false,
            open: false,
        }
    }
}

/// The network.
#[derive(Debug, Default)]
pub struct Network {
    links: Vec<Link>,
    flows: Vec<Flow>,
    free: Vec<u32>,
    /// Links that lost a flow: expanded if they were saturated.
    dirty: Vec<u32>,
    /// Links whose capacity changed: always expanded.
    resized: Vec<u32>,
    /// Flows that went active.
    started: Vec<u32>,
    /// Flows with a head item due, as a binary min-heap on (`due`, flow): one entry per flow,
    /// moved in place when its rate changes.
    due_heap: Vec<u32>,
    /// Each flow's index in `due_heap` (`NOT_QUEUED`: none).
    heap_pos: Vec<u32>,
    // Scratch, indexed by link or flow, valid where the mark equals `epoch`.
    epoch: u32,
    link_mark: Vec<u32>,
    link_expanded: Vec<u32>,
    flow_mark: Vec<u32>,
    residual: Vec<f64>,
    unfrozen: Vec<u32>,
    link_gen: Vec<u32>,
    new_rate: Vec<f64>,
    frozen: Vec<u32>,
    /// Bytes per second-long bin carried by the watched link.
    watched: Option<(u32, Vec<f64>)>,
    recomputes: u64,
}

const BIN_US: u64 = 1_000_000;

impl Network {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a link of `capacity` bytes per second and `latency_us` one-way latency.
    pub fn add_link(&mut self, capacity: f64, latency_us: u64) -> LinkId {
        self.links.push(Link {
            capacity: capacity.max(0.0),
            latency_us,
            flows: Vec::new(),
            used: 0.0,
            saturated: false,
            carried: 0.0,
        });
        self.link_mark.push(0);
        self.link_expanded.push(0);
        self.residual.push(0.0);
        self.unfrozen.push(0);
        self.link_gen.push(0);
        LinkId((self.links.len() - 1) as u32)
    }

    /// Record the bytes `link` carries per one-second bin.
    pub fn watch(&mut self, link: LinkId) {
        self.watched = Some((link.0, Vec::new()));
    }

    /// Bytes the watched link carried, per one-second bin.
    pub fn watched_bins(&self) -> &[f64] {
        self.watched.as_ref().map_or(&[], |(_, bins)| bins)
    }

    /// The one-way latency of a path, in microseconds.
    pub fn latency_us(&self, path: &[LinkId]) -> u64 {
        path.iter()
            .map(|l| self.links[l.0 as usize].latency_us)
            .sum()
    }

    /// Bytes a link has carried so far (items completed, and the sent part of cancelled ones).
    pub fn carried(&self, link: LinkId) -> f64 {
        self.links[link.0 as usize].carried
    }

    /// The capacity of a link, bytes per second.
    pub fn capacity(&self, link: LinkId) -> f64 {
        self.links[link.0 as usize].capacity
    }

    /// How many component recomputations ran.
    pub fn recomputes(&self) -> u64 {
        self.recomputes
    }

    /// Open an idle connection over `path`.
    pub fn open(&mut self, path: &[LinkId]) -> FlowId {
        let flow = Flow {
            path: path.iter().map(|l| l.0).collect(),
            open: true,
            ..Flow::default()
        };
        if let Some(slot) = self.free.pop() {
            self.flows[slot as usize] = flow;
            FlowId(slot)
        } else {
            self.flows.push(flow);
            self.heap_pos.push(NOT_QUEUED);
            self.flow_mark.push(0);
            self.new_rate.push(0.0);
            self.frozen.push(0);
            FlowId((self.flows.len() - 1) as u32)
        }
    }

    /// Queue an item on a connection.
    pub fn push(&mut self, now: u64, flow: FlowId, item: Item) {
        let f = &mut self.flows[flow.0 as usize];
        debug_assert!(f.open);
        f.queue.push_back(item);
        if !f.active {
            f.active = true;
            f.head_left = item.bytes as f64;
            f.rate = 0.0;
            f.since = now;
            f.due = NEVER;
            let path = f.path.clone();
            for &l in &path {
                self.links[l as usize].flows.push(flow.0);
            }
            self.started.push(flow.0);
        }
    }

    /// Items still queued on a connection (the head one included).
    pub fn queued(&self, flow: FlowId) -> usize {
        self.flows[flow.0 as usize].queue.len()
    }

    /// Drop the first queued item whose tag satisfies `pred`. A head item that was partly sent
    /// counts what was sent. Returns whether one was dropped.
    pub fn cancel(&mut self, now: u64, flow: FlowId, pred: impl Fn(u64) -> bool) -> bool {
        let Some(pos) = self.flows[flow.0 as usize]
            .queue
            .iter()
            .position(|i| pred(i.tag))
        else {
            return false;
        };
        if pos > 0 {
            self.flows[flow.0 as usize].queue.remove(pos);
            return true;
        }
        self.progress(now, flow.0);
        let f = &mut self.flows[flow.0 as usize];
        let sent = f.queue[0].bytes as f64 - f.head_left;
        f.queue.pop_front();
        let path = f.path.clone();
        self.account(now, &path, sent);
        self.start_next(now, flow.0);
        true
    }

    /// Close a connection, dropping what it still had queued.
    pub fn close(&mut self, now: u64, flow: FlowId) {
        let f = &self.flows[flow.0 as usize];
        if !f.open {
            return;
        }
        if f.active {
            self.progress(now, flow.0);
            let f = &self.flows[flow.0 as usize];
            let sent = f
                .queue
                .front()
                .map_or(0.0, |i| i.bytes as f64 - f.head_left);
            let path = f.path.clone();
            self.account(now, &path, sent);
            self.deactivate(flow.0);
        }
        self.set_due(flow.0, NEVER);
        let f = &mut self.flows[flow.0 as usize];
        f.open = false;
        f.queue.clear();
        self.free.push(flow.0);
    }

    /// Change a link's capacity (an outage sets it to zero).
    pub fn set_capacity(&mut self, link: LinkId, capacity: f64) {
        self.links[link.0 as usize].capacity = capacity.max(0.0);
        self.resized.push(link.0);
    }

    /// When the next head item is due, microseconds.
    pub fn next_due(&self) -> Option<u64> {
        self.due_heap.first().map(|&f| self.flows[f as usize].due)
    }

    /// The head item of a connection that is due at `now`, if any (call until `None`): it
    /// is done, and the connection moves on to its next item.
    pub fn pop_due(&mut self, now: u64) -> Option<(FlowId, Item)> {
        let &flow = self.due_heap.first()?;
        if self.flows[flow as usize].due > now {
            return None;
        }
        let f = &mut self.flows[flow as usize];
        let item = f.queue.pop_front()?;
        let path = f.path.clone();
        self.account(now, &path, item.bytes as f64);
        self.start_next(now, flow);
        Some((FlowId(flow), item))
    }

    /// Bring every rate up to date after changes at `now`.
    pub fn settle(&mut self, now: u64) {
        while !(self.dirty.is_empty() && self.resized.is_empty() && self.started.is_empty()) {
            self.recompute(now);
        }
    }

    fn account(&mut self, now: u64, path: &[u32], bytes: f64) {
        for &l in path {
            self.links[l as usize].carried += bytes;
        }
        if let Some((watched, bins)) = &mut self.watched
            && path.contains(watched)
        {
            let bin = (now / BIN_US) as usize;
            if bins.len() <= bin {
                bins.resize(bin + 1, 0.0);
            }
            bins[bin] += bytes;
        }
    }

    /// Bring the head item's remaining bytes up to `now` at the current rate.
    fn progress(&mut self, now: u64, flow: u32) {
        let f = &mut self.flows[flow as usize];
        if f.active {
            let dt = now.saturating_sub(f.since) as f64 / 1e6;
            f.head_left = (f.head_left - f.rate * dt).max(0.0);
            f.since = now;
        }
    }

    /// The head item left: start the next one at the same rate, or go idle.
    fn start_next(&mut self, now: u64, flow: u32) {
        let f = &mut self.flows[flow as usize];
        if let Some(next) = f.queue.front() {
            f.head_left = next.bytes as f64;
            f.since = now;
            self.arm(flow);
        } else {
            self.deactivate(flow);
        }
    }

    fn deactivate(&mut self, flow: u32) {
        self.set_due(flow, NEVER);
        let f = &mut self.flows[flow as usize];
        f.active = false;
        let rate = f.rate;
        f.rate = 0.0;
        let path = f.path.clone();
        for l in path {
            let link = &mut self.links[l as usize];
            if let Some(pos) = link.flows.iter().position(|&x| x == flow) {
                link.flows.swap_remove(pos);
            }
            link.used -= rate;
            self.dirty.push(l);
        }
    }

    /// Compute when the head item is due, and move the flow in the due heap.
    fn arm(&mut self, flow: u32) {
        let f = &self.flows[flow as usize];
        let due = if f.rate > 0.0 {
            let us = (f.head_left / f.rate * 1e6).ceil();
            f.since
                .saturating_add(if us >= 1e18 { u64::MAX / 2 } else { us as u64 })
        } else {
            NEVER
        };
        self.set_due(flow, due);
    }

    fn key(&self, flow: u32) -> (u64, u32) {
        (self.flows[flow as usize].due, flow)
    }

    /// Set a flow's due time, inserting, moving or (`NEVER`) removing it in the due heap.
    fn set_due(&mut self, flow: u32, due: u64) {
        let old = self.flows[flow as usize].due;
        self.flows[flow as usize].due = due;
        let pos = self.heap_pos[flow as usize];
        if pos == NOT_QUEUED {
            if due != NEVER {
                let i = self.due_heap.len();
                self.due_heap.push(flow);
                self.heap_pos[flow as usize] = i as u32;
                self.sift_up(i);
            }
            return;
        }
        let i = pos as usize;
        if due == NEVER {
            let last = self.due_heap.len() - 1;
            self.heap_swap(i, last);
            self.due_heap.pop();
            self.heap_pos[flow as usize] = NOT_QUEUED;
            if i < self.due_heap.len() {
                self.sift_down(i);
                self.sift_up(i);
            }
        } else if due < old {
            self.sift_up(i);
        } else if due > old {
            self.sift_down(i);
        }
    }

    fn heap_swap(&mut self, i: usize, j: usize) {
        self.due_heap.swap(i, j);
        self.heap_pos[self.due_heap[i] as usize] = i as u32;
        self.heap_pos[self.due_heap[j] as usize] = j as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.key(self.due_heap[i]) >= self.key(self.due_heap[parent]) {
                break;
            }
            self.heap_swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.due_heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            if l < n && self.key(self.due_heap[l]) < self.key(self.due_heap[least]) {
                least = l;
            }
            if r < n && self.key(self.due_heap[r]) < self.key(self.due_heap[least]) {
                least = r;
            }
            if least == i {
                break;
            }
            self.heap_swap(i, least);
            i = least;
        }
    }

    fn recompute(&mut self, now: u64) {
        self.recomputes += 1;
        self.epoch = self.epoch.wrapping_add(1);
        let epoch = self.epoch;
        let mut comp_links: Vec<u32> = Vec::new();
        let mut comp_flows: Vec<u32> = Vec::new();
        let mut stack: Vec<u32> = Vec::new();
        // A link that lost a flow matters to the others on it only if it was their
        // bottleneck (saturated); a new flow joins with its links, and grows the component
        // if it saturates one; a resized link affects everyone on it.
        let started = std::mem::take(&mut self.started);
        let dirty = std::mem::take(&mut self.dirty);
        let resized = std::mem::take(&mut self.resized);
        let mut seeds: Vec<u32> = Vec::new();
        for f in started {
            let flow = &self.flows[f as usize];
            if flow.active && self.flow_mark[f as usize] != epoch {
                self.flow_mark[f as usize] = epoch;
                comp_flows.push(f);
                seeds.extend_from_slice(&flow.path);
            }
        }
        for l in seeds.into_iter().chain(dirty) {
            if self.link_mark[l as usize] != epoch {
                self.link_mark[l as usize] = epoch;
                comp_links.push(l);
            }
            if self.links[l as usize].saturated && self.link_expanded[l as usize] != epoch {
                self.link_expanded[l as usize] = epoch;
                stack.push(l);
            }
        }
        for l in resized {
            if self.link_mark[l as usize] != epoch {
                self.link_mark[l as usize] = epoch;
                comp_links.push(l);
            }
            if self.link_expanded[l as usize] != epoch {
                self.link_expanded[l as usize] = epoch;
                stack.push(l);
            }
        }
        loop {
            self.expand(&mut stack, &mut comp_links, &mut comp_flows);
            let grown = self.fill(&comp_links, &comp_flows);
            if grown.is_empty() {
                break;
            }
            for l in grown {
                self.link_expanded[l as usize] = epoch;
                stack.push(l);
            }
        }
        // Apply the new rates. A crowded link's use is updated by the changes (summing its
        // thousand flows at every change would dominate); others' is summed afresh.
        for &f in &comp_flows {
            let rate = self.new_rate[f as usize];
            let old = self.flows[f as usize].rate;
            if rate != old {
                self.progress(now, f);
                for j in 0..self.flows[f as usize].path.len() {
                    let m = self.flows[f as usize].path[j] as usize;
                    if self.links[m].flows.len() > CROWDED {
                        self.links[m].used += rate - old;
                    }
                }
                self.flows[f as usize].rate = rate;
                self.arm(f);
            }
        }
        for &l in &comp_links {
            let link = &self.links[l as usize];
            let used: f64 = if link.flows.len() > CROWDED {
                link.used.max(0.0)
            } else {
                link.flows
                    .iter()
                    .map(|&f| self.flows[f as usize].rate)
                    .sum()
            };
            let link = &mut self.links[l as usize];
            link.used = used;
            link.saturated = !link.flows.is_empty() && used >= link.capacity * (1.0 - 1e-9);
        }
    }

    /// Pull into the component every flow on the links in `stack`, and their links; continue
    /// through links that are saturated.
    fn expand(
        &mut self,
        stack: &mut Vec<u32>,
        comp_links: &mut Vec<u32>,
        comp_flows: &mut Vec<u32>,
    ) {
        let epoch = self.epoch;
        while let Some(l) = stack.pop() {
            for i in 0..self.links[l as usize].flows.len() {
                let f = self.links[l as usize].flows[i];
                if self.flow_mark[f as usize] == epoch {
                    continue;
                }
                self.flow_mark[f as usize] = epoch;
                comp_flows.push(f);
                for j in 0..self.flows[f as usize].path.len() {
                    let m = self.flows[f as usize].path[j];
                    if self.link_mark[m as usize] != epoch {
                        self.link_mark[m as usize] = epoch;
                        comp_links.push(m);
                    }
                    if self.links[m as usize].saturated && self.link_expanded[m as usize] != epoch {
                        self.link_expanded[m as usize] = epoch;
                        stack.push(m);
                    }
                }
            }
        }
    }

    /// Progressive filling of the component's flows into what their links have left after
    /// the flows outside it. Returns links that ended up saturated while carrying flows
    /// outside the component (the component must grow over them).
    ///
    /// Cost: one heap entry per link with unfrozen flows, re-pushed once per bottleneck step
    /// that touched it (not once per flow), and the filling stops as soon as every flow is
    /// frozen, so that the private access links of a crowded LAN's flows are never popped.
    fn fill(&mut self, comp_links: &[u32], comp_flows: &[u32]) -> Vec<u32> {
        let epoch = self.epoch;
        let mut entries = Vec::with_capacity(comp_links.len());
        // A crowded link (the origin's egress, say) is not scanned: what flows outside the
        // component use of it is its use less the component's flows' rates.
        for &l in comp_links {
            if self.links[l as usize].flows.len() > CROWDED {
                self.residual[l as usize] = 0.0;
                self.unfrozen[l as usize] = 0;
            }
        }
        for &f in comp_flows {
            let rate = self.flows[f as usize].rate;
            for j in 0..self.flows[f as usize].path.len() {
                let m = self.flows[f as usize].path[j] as usize;
                if self.links[m].flows.len() > CROWDED {
                    self.residual[m] += rate;
                    self.unfrozen[m] += 1;
                }
            }
        }
        for &l in comp_links {
            let link = &self.links[l as usize];
            let (outside, inside) = if link.flows.len() > CROWDED {
                (
                    (link.used - self.residual[l as usize]).max(0.0),
                    self.unfrozen[l as usize],
                )
            } else {
                let mut outside = 0.0;
                let mut inside = 0u32;
                for &f in &link.flows {
                    if self.flow_mark[f as usize] == epoch {
                        inside += 1;
                    } else {
                        outside += self.flows[f as usize].rate;
                    }
                }
                (outside, inside)
            };
            let residual = (link.capacity - outside).max(0.0);
            self.residual[l as usize] = residual;
            self.unfrozen[l as usize] = inside;
            self.link_gen[l as usize] = 0;
            if inside > 0 {
                entries.push(Share {
                    share: residual / f64::from(inside),
                    link: l,
                    generation: 0,
                });
            }
        }
        let frozen_mark = epoch;
        for &f in comp_flows {
            self.frozen[f as usize] = frozen_mark.wrapping_sub(1);
        }
        let mut left = comp_flows.len();
        let mut heap = BinaryHeap::from(entries);
        let mut grown = Vec::new();
        let mut touched: Vec<u32> = Vec::new();
        while left > 0 {
            let Some(Share {
                share,
                link,
                generation,
            }) = heap.pop()
            else {
                break;
            };
            if generation != self.link_gen[link as usize] || self.unfrozen[link as usize] == 0 {
                continue;
            }
            let mut outside = false;
            for i in 0..self.links[link as usize].flows.len() {
                let f = self.links[link as usize].flows[i];
                if self.flow_mark[f as usize] != epoch {
                    outside = true;
                    continue;
                }
                if self.frozen[f as usize] == frozen_mark {
                    continue;
                }
                self.frozen[f as usize] = frozen_mark;
                self.new_rate[f as usize] = share;
                left -= 1;
                for j in 0..self.flows[f as usize].path.len() {
                    let m = self.flows[f as usize].path[j] as usize;
                    self.residual[m] = (self.residual[m] - share).max(0.0);
                    self.unfrozen[m] -= 1;
                    if self.link_gen[m] & TOUCHED == 0 {
                        self.link_gen[m] |= TOUCHED;
                        touched.push(m as u32);
                    }
                }
            }
            // One new entry per touched link that still has unfrozen flows.
            for m in touched.drain(..) {
                let m = m as usize;
                self.link_gen[m] = (self.link_gen[m] & !TOUCHED) + 1;
                if self.unfrozen[m] > 0 {
                    heap.push(Share {
                        share: self.residual[m] / f64::from(self.unfrozen[m]),
                        link: m as u32,
                        generation: self.link_gen[m],
                    });
                }
            }
            if outside && self.link_expanded[link as usize] != epoch {
                grown.push(link);
            }
        }
        grown
    }
}

/// Marks a link touched in the current filling step (in its generation word).
const TOUCHED: u32 = 1 << 31;

/// A heap entry: the fair share a link offers its unfrozen flows (smallest first).
#[derive(Debug, Clone, Copy)]
struct Share {
    share: f64,
    link: u32,
    generation: u32,
}

impl PartialEq for Share {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the smallest share first.
        other
            .share
            .total_cmp(&self.share)
            .then(other.link.cmp(&self.link))
            .then(other.generation.cmp(&self.generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: f64 = 1e6;

    fn rates(net: &Network, flows: &[FlowId]) -> Vec<f64> {
        flows
            .iter()
            .map(|f| (net.flows[f.0 as usize].rate / MB * 1000.0).round() / 1000.0)
            .collect()
    }

    fn item(bytes: u64) -> Item {
        Item { bytes, tag: 0 }
    }

    /// The textbook example: links A (10) and B (10); flow 1 on A and B, flow 2 on A, flow 3
    /// on B, flow 4 on B. B splits three ways (3.33 each); flow 2 takes what A has left.
    #[test]
    fn max_min_on_two_links() {
        let mut net = Network::new();
        let a = net.add_link(10.0 * MB, 0);
        let b = net.add_link(10.0 * MB, 0);
        let f1 = net.open(&[a, b]);
        let f2 = net.open(&[a]);
        let f3 = net.open(&[b]);
        let f4 = net.open(&[b]);
        for f in [f1, f2, f3, f4] {
            net.push(0, f, item(1 << 30));
        }
        net.settle(0);
        assert_eq!(rates(&net, &[f1, f2, f3, f4]), [3.333, 6.667, 3.333, 3.333]);
    }

    /// A private access link caps a flow below its fair share; the others share the rest.
    #[test]
    fn capped_flow_leaves_capacity_to_the_others() {
        let mut net = Network::new();
        let lan = net.add_link(100.0 * MB, 0);
        let slow = net.add_link(10.0 * MB, 0);
        let fast1 = net.add_link(1000.0 * MB, 0);
        let fast2 = net.add_link(1000.0 * MB, 0);
        let f1 = net.open(&[lan, slow]);
        let f2 = net.open(&[lan, fast1]);
        let f3 = net.open(&[lan, fast2]);
        for f in [f1, f2, f3] {
            net.push(0, f, item(1 << 30));
        }
        net.settle(0);
        assert_eq!(rates(&net, &[f1, f2, f3]), [10.0, 45.0, 45.0]);
        // Flow 1 goes idle: the other two split the LAN.
        net.close(1000, f1);
        net.settle(1000);
        assert_eq!(rates(&net, &[f2, f3]), [50.0, 50.0]);
    }

    /// A change on one side of an unsaturated link does not disturb the other side, and the
    /// component grows when a newcomer saturates a link shared with outside flows.
    #[test]
    fn components_grow_over_newly_saturated_links() {
        let mut net = Network::new();
        let origin = net.add_link(30.0 * MB, 0);
        let wan1 = net.add_link(10.0 * MB, 0);
        let wan2 = net.add_link(10.0 * MB, 0);
        let wan3 = net.add_link(20.0 * MB, 0);
        let f1 = net.open(&[origin, wan1]);
        let f2 = net.open(&[origin, wan2]);
        net.push(0, f1, item(1 << 30));
        net.push(0, f2, item(1 << 30));
        net.settle(0);
        assert_eq!(rates(&net, &[f1, f2]), [10.0, 10.0]);
        // A third flow saturates the origin (30): f1, f2 stay at 10 (their WANs), f3 gets 10.
        let f3 = net.open(&[origin, wan3]);
        net.push(0, f3, item(1 << 30));
        net.settle(0);
        assert_eq!(rates(&net, &[f1, f2, f3]), [10.0, 10.0, 10.0]);
        // The origin shrinks to 15: max-min gives 5 each.
        net.set_capacity(origin, 15.0 * MB);
        net.settle(0);
        assert_eq!(rates(&net, &[f1, f2, f3]), [5.0, 5.0, 5.0]);
        // wan1 drops to 1: the others share what is left of the origin (7 each).
        net.set_capacity(wan1, 1.0 * MB);
        net.settle(0);
        assert_eq!(rates(&net, &[f1, f2, f3]), [1.0, 7.0, 7.0]);
        // An outage stops f1; the others are capped by the origin at 7.5.
        net.set_capacity(wan1, 0.0);
        net.settle(0);
        assert_eq!(rates(&net, &[f1, f2, f3]), [0.0, 7.5, 7.5]);
    }

    /// A crowded link (more than `CROWDED` flows) keeps its use by differences: rates stay
    /// max-min as flows come and go.
    #[test]
    fn crowded_link_shares_fairly_as_flows_come_and_go() {
        let mut net = Network::new();
        let origin = net.add_link(100.0 * MB, 0);
        let flows: Vec<FlowId> = (0..100)
            .map(|_| {
                let access = net.add_link(2.0 * MB, 0);
                let f = net.open(&[origin, access]);
                net.push(0, f, item(1 << 40));
                f
            })
            .collect();
        net.settle(0);
        assert!(rates(&net, &flows).iter().all(|&r| r == 1.0));
        // Half of them go: the rest are capped by their access links.
        for &f in &flows[..50] {
            net.close(10, f);
        }
        net.settle(10);
        assert!(rates(&net, &flows[50..]).iter().all(|&r| r == 2.0));
        // The origin shrinks to 40: 0.8 each.
        net.set_capacity(origin, 40.0 * MB);
        net.settle(20);
        assert!(rates(&net, &flows[50..]).iter().all(|&r| r == 0.8));
        // A newcomer with a fast access link of its own gets the same share.
        let fast = net.add_link(1000.0 * MB, 0);
        let f = net.open(&[origin, fast]);
        net.push(30, f, item(1 << 40));
        net.settle(30);
        let share = (40.0 / 51.0 * 1000.0_f64).round() / 1000.0;
        assert_eq!(rates(&net, &[f]), [share]);
        assert!(rates(&net, &flows[50..]).iter().all(|&r| r == share));
    }

    /// Items on a connection go one after another, each finishing when its bytes are sent,
    /// and a cancelled head item counts only what was sent.
    #[test]
    fn items_complete_in_order_at_the_flow_rate() {
        let mut net = Network::new();
        let l = net.add_link(1.0 * MB, 0);
        net.watch(l);
        let f = net.open(&[l]);
        net.push(0, f, item(500_000));
        net.push(0, f, item(250_000));
        net.settle(0);
        assert_eq!(net.next_due(), Some(500_000));
        assert!(net.pop_due(499_999).is_none(), "not yet");
        let (flow, done) = net.pop_due(500_000).unwrap();
        assert_eq!((flow, done.bytes), (f, 500_000));
        assert!(net.pop_due(500_000).is_none());
        assert_eq!(net.next_due(), Some(750_000));
        // Cancel halfway through the second item: 125 000 bytes were sent.
        assert!(net.cancel(625_000, f, |_| true));
        net.settle(625_000);
        assert_eq!(net.carried(l), 625_000.0);
        assert_eq!(net.watched_bins(), [625_000.0]);
        // Nothing is due any more.
        assert_eq!(net.next_due(), None);
    }
}
