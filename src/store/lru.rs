//! The far spokes kept open, least recently used first: O(1) to touch, remove or evict.
//!
//! A doubly linked list threaded through a slab of nodes, with a hash map from spoke to node.
//! A far put touches its spoke, so with trigger times spread over a year (a few hundred far
//! spokes) every put moves one spoke to the back: a `Vec` scan and shift per put was O(open).
//! Each node keeps when it was last touched, so that the spokes idle for a while can be found
//! from the front ([`SpokeLru::shed_idle`]).

use rustc_hash::FxHashMap;

use crate::segment::{Micros, SpokeId};

/// No node: the end of the list, or an empty list.
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Node {
    id: SpokeId,
    /// When it was last touched.
    used: Micros,
    /// Whether [`SpokeLru::shed_idle`] passed it since it was last touched.
    shed: bool,
    /// Towards the least recently used.
    prev: u32,
    /// Towards the most recently used.
    next: u32,
}

/// Spokes in the order they were last touched.
pub(crate) struct SpokeLru {
    nodes: Vec<Node>,
    /// Indices of unused nodes.
    free: Vec<u32>,
    at: FxHashMap<SpokeId, u32>,
    /// Least recently used.
    oldest: u32,
    /// Most recently used.
    newest: u32,
}

impl SpokeLru {
    pub fn new() -> Self {
        SpokeLru {
            nodes: Vec::new(),
            free: Vec::new(),
            at: FxHashMap::default(),
            oldest: NIL,
            newest: NIL,
        }
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn contains(&self, id: &SpokeId) -> bool {
        self.at.contains_key(id)
    }

    /// Makes `id` the most recently used, touched at `now`, adding it if absent.
    pub fn touch(&mut self, id: SpokeId, now: Micros) {
        let n = match self.at.get(&id) {
            Some(&n) if n == self.newest => {
                let node = &mut self.nodes[n as usize];
                node.used = now;
                node.shed = false;
                return;
            }
            Some(&n) => {
                self.unlink(n);
                n
            }
            None => {
                let node = Node {
                    id,
                    used: now,
                    shed: false,
                    prev: NIL,
                    next: NIL,
                };
                let n = match self.free.pop() {
                    Some(n) => {
                        self.nodes[n as usize] = node;
                        n
                    }
                    None => {
                        self.nodes.push(node);
                        // At most one node per open file: far below u32::MAX.
                        (self.nodes.len() - 1) as u32
                    }
                };
                self.at.insert(id, n);
                n
            }
        };
        let node = &mut self.nodes[n as usize];
        node.used = now;
        node.shed = false;
        self.link_newest(n);
    }

    /// Calls `shed` for up to `max` spokes last touched before `before` that it was not called
    /// for since, least recently used first; returns for how many. Spokes stay in the list.
    pub fn shed_idle(
        &mut self,
        before: Micros,
        max: usize,
        mut shed: impl FnMut(SpokeId),
    ) -> usize {
        let mut done = 0;
        let mut n = self.oldest;
        while n != NIL && done < max {
            let node = &mut self.nodes[n as usize];
            if node.used >= before {
                break;
            }
            if !node.shed {
                node.shed = true;
                shed(node.id);
                done += 1;
            }
            n = node.next;
        }
        done
    }

    /// Forgets `id`; whether it was there.
    pub fn remove(&mut self, id: &SpokeId) -> bool {
        let Some(n) = self.at.remove(id) else {
            return false;
        };
        self.unlink(n);
        self.free.push(n);
        true
    }

    /// Removes and returns the least recently used spoke.
    pub fn pop_oldest(&mut self) -> Option<SpokeId> {
        if self.oldest == NIL {
            return None;
        }
        let id = self.nodes[self.oldest as usize].id;
        self.remove(&id);
        Some(id)
    }

    fn unlink(&mut self, n: u32) {
        let Node { prev, next, .. } = self.nodes[n as usize];
        match prev {
            NIL => self.oldest = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.newest = prev,
            x => self.nodes[x as usize].prev = prev,
        }
    }

    fn link_newest(&mut self, n: u32) {
        let node = &mut self.nodes[n as usize];
        node.prev = self.newest;
        node.next = NIL;
        match self.newest {
            NIL => self.oldest = n,
            last => self.nodes[last as usize].next = n,
        }
        self.newest = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> SpokeId {
        SpokeId { start: i, span: 1 }
    }

    /// Against a `Vec` model (the former implementation): random touches, removes and
    /// evictions give the same order.
    #[test]
    fn keeps_the_order_of_a_vec() {
        let mut lru = SpokeLru::new();
        let mut model: Vec<SpokeId> = Vec::new();
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let s = id(rng.u64(0..40));
            match rng.u8(0..10) {
                0..=5 => {
                    lru.touch(s, 0);
                    model.retain(|&x| x != s);
                    model.push(s);
                }
                6..=7 => {
                    let had = model.contains(&s);
                    model.retain(|&x| x != s);
                    assert_eq!(lru.remove(&s), had);
                }
                _ => {
                    let want = (!model.is_empty()).then(|| model.remove(0));
                    assert_eq!(lru.pop_oldest(), want);
                }
            }
            assert_eq!(lru.len(), model.len());
            assert_eq!(lru.contains(&s), model.contains(&s));
        }
        let mut rest = Vec::new();
        while let Some(s) = lru.pop_oldest() {
            rest.push(s);
        }
        assert_eq!(rest, model);
        assert!(lru.nodes.len() <= 40, "nodes are reused");
    }

    /// Only spokes idle since before the cut-off are shed, oldest first, each once until it
    /// is touched again, at most `max` per call.
    #[test]
    fn sheds_each_idle_spoke_once_until_touched_again() {
        let mut lru = SpokeLru::new();
        for i in 0..5 {
            lru.touch(id(i), 10 * i);
        }
        let shed_now = |lru: &mut SpokeLru, before, max| {
            let mut got = Vec::new();
            let n = lru.shed_idle(before, max, |s| got.push(s.start));
            assert_eq!(n, got.len());
            got
        };
        assert_eq!(shed_now(&mut lru, 25, 2), [0, 1]);
        assert_eq!(shed_now(&mut lru, 25, 2), [2]);
        assert_eq!(shed_now(&mut lru, 25, 2), Vec::<u64>::new());
        // Touched again: busy until it is idle once more, then shed again.
        lru.touch(id(1), 50);
        lru.touch(id(2), 50);
        assert_eq!(shed_now(&mut lru, 45, 10), [3, 4]);
        assert_eq!(shed_now(&mut lru, 60, 10), [1, 2]);
        assert_eq!(lru.len(), 5, "shedding keeps the spokes");
        // The newest, touched again, is busy again too.
        lru.touch(id(2), 70);
        assert_eq!(shed_now(&mut lru, 80, 10), [2]);
    }
}
