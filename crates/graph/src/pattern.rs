//! The one way to query a graph's structure: an [`Index`] of who produces and who reads each
//! value of a node list, built in one pass. The float fusions (`rewrite`), the int8 rules
//! (octet-runtime's lowering), sessions and `octet check` match their patterns through it. An
//! index describes the nodes it was built from: a rewrite that changes them builds a new one.

use crate::graph::{Graph, Node, ValueId};
use crate::typed::TypedGraph;

/// Producer and readers of every value.
#[derive(Clone, Debug)]
pub struct Index {
    producer: Vec<Option<usize>>,
    /// Reading nodes in ascending order, each once.
    readers: Vec<Vec<usize>>,
    /// Input slots and graph outputs that read the value.
    uses: Vec<usize>,
    output: Vec<bool>,
}

impl Index {
    /// The index of `nodes` over `num_values` value ids, `outputs` being the graph's outputs.
    pub fn new(num_values: usize, nodes: &[Node], outputs: &[ValueId]) -> Index {
        let mut ix = Index {
            producer: vec![None; num_values],
            readers: vec![Vec::new(); num_values],
            uses: vec![0; num_values],
            output: vec![false; num_values],
        };
        for (i, n) in nodes.iter().enumerate() {
            for &v in n.inputs.iter().flatten() {
                ix.uses[v] += 1;
                if ix.readers[v].last() != Some(&i) {
                    ix.readers[v].push(i);
                }
            }
            for &o in &n.outputs {
                ix.producer[o].get_or_insert(i);
            }
        }
        for &o in outputs {
            ix.uses[o] += 1;
            ix.output[o] = true;
        }
        ix
    }

    pub fn of_typed(g: &TypedGraph) -> Index {
        Index::new(g.names.len(), &g.nodes, &g.outputs)
    }

    pub fn of_graph(g: &Graph) -> Index {
        Index::new(g.names.len(), &g.nodes, &g.outputs)
    }

    /// The node that computes `v` (none for inputs and constants).
    pub fn producer(&self, v: ValueId) -> Option<usize> {
        self.producer.get(v).copied().flatten()
    }

    /// The nodes that read `v`, in order, each once.
    pub fn readers(&self, v: ValueId) -> &[usize] {
        self.readers.get(v).map(Vec::as_slice).unwrap_or_default()
    }

    /// How many node input slots and graph outputs read `v`.
    pub fn uses(&self, v: ValueId) -> usize {
        self.uses.get(v).copied().unwrap_or(0)
    }

    /// Whether `v` is a graph output.
    pub fn is_output(&self, v: ValueId) -> bool {
        self.output.get(v).copied().unwrap_or(false)
    }

    /// The only node reading `v`, when `v` is not a graph output.
    pub fn sole_reader(&self, v: ValueId) -> Option<usize> {
        match self.readers(v) {
            [r] if !self.is_output(v) => Some(*r),
            _ => None,
        }
    }
}
