//! Names across an ONNX graph and the subgraphs of its If, Loop and Scan nodes: what each scope
//! defines and reads, and the rules ONNX sets for them (every graph topologically sorted, each
//! name defined once across all scopes, no shadowing). Every edit of a `ModelProto` that asks
//! "who reads this value" asks it here, so that a read inside a subgraph counts.

use std::collections::HashSet;

use crate::proto::{GraphProto, ModelProto, NodeProto};

/// The subgraphs a node holds (If's branches, Loop's and Scan's bodies).
pub fn subgraphs(n: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    n.attribute.iter().flat_map(|a| a.g.iter().chain(&a.graphs))
}

fn subgraphs_mut(n: &mut NodeProto) -> impl Iterator<Item = &mut GraphProto> {
    n.attribute.iter_mut().flat_map(|a| a.g.iter_mut().chain(a.graphs.iter_mut()))
}

/// Calls `f` on every node of `g` and of its subgraphs, at any depth.
pub fn for_each_node(g: &GraphProto, f: &mut impl FnMut(&NodeProto)) {
    for n in &g.node {
        f(n);
        for sub in subgraphs(n) {
            for_each_node(sub, f);
        }
    }
}

/// Every name that `g` or any of its subgraphs defines (initializers, inputs, node outputs).
pub fn defined_names(g: &GraphProto) -> HashSet<String> {
    fn collect(g: &GraphProto, names: &mut HashSet<String>) {
        names.extend(g.initializer.iter().map(|t| t.name().to_string()));
        names.extend(g.input.iter().map(|i| i.name().to_string()));
        for n in &g.node {
            names.extend(n.output.iter().filter(|o| !o.is_empty()).cloned());
            for sub in subgraphs(n) {
                collect(sub, names);
            }
        }
    }
    let mut names = HashSet::new();
    collect(g, &mut names);
    names
}

/// Names for new values and nodes that nothing in a graph, its subgraphs included, uses yet.
pub struct FreshNames(HashSet<String>);

impl FreshNames {
    /// Every name `g` and its subgraphs define, and every node name, taken.
    pub fn of(g: &GraphProto) -> FreshNames {
        let mut names = defined_names(g);
        for_each_node(g, &mut |n| {
            names.insert(n.name().to_string());
        });
        FreshNames(names)
    }

    /// `want`, or `want_1`, `want_2`, … when it is taken; taken from then on.
    pub fn fresh(&mut self, want: String) -> String {
        let mut name = want.clone();
        let mut k = 1;
        while self.0.contains(&name) {
            name = format!("{want}_{k}");
            k += 1;
        }
        self.0.insert(name.clone());
        name
    }
}

/// The names node `n` reads: its inputs and whatever its subgraphs read from enclosing scopes.
/// ONNX forbids shadowing, so a name a subgraph reads without defining it is a read of the
/// enclosing scopes.
pub fn reads(n: &NodeProto) -> HashSet<&str> {
    fn subgraph_reads<'a>(g: &'a GraphProto, out: &mut HashSet<&'a str>) {
        let mut own: HashSet<&str> = g.initializer.iter().map(|t| t.name()).chain(g.input.iter().map(|i| i.name())).collect();
        for n in &g.node {
            for r in reads(n) {
                if !own.contains(r) {
                    out.insert(r);
                }
            }
            own.extend(n.output.iter().map(String::as_str));
        }
        out.extend(g.output.iter().map(|o| o.name()).filter(|o| !own.contains(o)));
    }
    let mut out: HashSet<&str> = n.input.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    for sub in subgraphs(n) {
        subgraph_reads(sub, &mut out);
    }
    out
}

/// Makes every read of `old` in `g` and its subgraphs read `new` instead.
pub fn rename_reads(g: &mut GraphProto, old: &str, new: &str) {
    for n in g.node.iter_mut() {
        for input in n.input.iter_mut().filter(|i| *i == old) {
            *input = new.to_string();
        }
        for sub in subgraphs_mut(n) {
            rename_reads(sub, old, new);
        }
    }
    for o in g.output.iter_mut().filter(|o| o.name() == old) {
        o.name = Some(new.to_string());
    }
}

/// Drops the nodes of `g` whose outputs nothing reads (the graph's outputs and every node's
/// reads, those of subgraphs included), then the initializers nothing reads.
pub fn remove_unread(g: &mut GraphProto) {
    loop {
        let read: HashSet<String> = g
            .node
            .iter()
            .flat_map(|n| reads(n).into_iter().map(String::from))
            .chain(g.output.iter().map(|o| o.name().to_string()))
            .collect();
        let before = g.node.len();
        g.node.retain(|n| n.output.iter().any(|o| read.contains(o)));
        if g.node.len() == before {
            let used = |name: &str| read.contains(name);
            g.initializer.retain(|t| used(t.name()));
            return;
        }
    }
}

/// Checks the rules ONNX sets for names in `model`: in the graph and every subgraph, each node
/// reads only names defined before it (in its scope or an enclosing one), each name is defined
/// once across all scopes, and every graph output is defined. The error names the node.
pub fn validate(model: &ModelProto) -> Result<(), String> {
    fn check(g: &GraphProto, outer: &[&HashSet<&str>], all: &mut HashSet<String>, path: &str) -> Result<(), String> {
        let mut own: HashSet<&str> = HashSet::new();
        let define = |name: &'_ str, what: &str, all: &mut HashSet<String>| -> Result<(), String> {
            if !all.insert(name.to_string()) {
                return Err(format!(
                    "{path}: {what} defines '{name}', which is already defined (each name is defined once in a model, subgraphs included)"
                ));
            }
            Ok(())
        };
        for t in &g.initializer {
            define(t.name(), &format!("initializer '{}'", t.name()), all)?;
            own.insert(t.name());
        }
        for i in &g.input {
            if !own.contains(i.name()) {
                define(i.name(), &format!("input '{}'", i.name()), all)?;
                own.insert(i.name());
            }
        }
        let visible = |name: &str, own: &HashSet<&str>| own.contains(name) || outer.iter().any(|s| s.contains(name));
        for (k, n) in g.node.iter().enumerate() {
            let node = if n.name().is_empty() { format!("{} #{k}", n.op_type()) } else { n.name().to_string() };
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                if !visible(i, &own) {
                    return Err(format!(
                        "{path}: node '{node}' ({}) reads '{i}', which no node before it, initializer or input defines",
                        n.op_type()
                    ));
                }
            }
            let mut scopes = outer.to_vec();
            scopes.push(&own);
            for a in &n.attribute {
                for sub in a.g.iter().chain(&a.graphs) {
                    check(sub, &scopes, all, &format!("{path} > node '{node}' attribute '{}'", a.name()))?;
                }
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                define(o, &format!("node '{node}' ({})", n.op_type()), all)?;
                own.insert(o);
            }
        }
        for o in &g.output {
            if !visible(o.name(), &own) {
                return Err(format!("{path}: output '{}' is not defined", o.name()));
            }
        }
        Ok(())
    }
    let g = model.graph.as_ref().ok_or("the model has no graph")?;
    check(g, &[], &mut HashSet::new(), "graph")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{attribute_proto::AttributeType, AttributeProto, ValueInfoProto};

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            name: Some(outputs[0].to_uppercase()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn value(name: &str) -> ValueInfoProto {
        ValueInfoProto { name: Some(name.into()), ..Default::default() }
    }

    fn branch(nodes: Vec<NodeProto>, output: &str) -> AttributeProto {
        AttributeProto {
            name: Some("then_branch".into()),
            r#type: Some(AttributeType::Graph as i32),
            g: Some(GraphProto { node: nodes, output: vec![value(output)], ..Default::default() }),
            ..Default::default()
        }
    }

    /// `c = Concat(x, x)` read only inside the If's branch; `dead = Neg(x)` read by nothing.
    fn graph_with_if() -> GraphProto {
        let mut iff = node("If", &["cond"], &["y"]);
        iff.attribute.push(branch(vec![node("Relu", &["c"], &["inner"])], "inner"));
        GraphProto {
            node: vec![node("Concat", &["x", "x"], &["c"]), node("Neg", &["x"], &["dead"]), iff],
            input: vec![value("x"), value("cond")],
            output: vec![value("y")],
            ..Default::default()
        }
    }

    #[test]
    fn a_value_read_only_inside_a_subgraph_is_read() {
        let g = graph_with_if();
        let iff = &g.node[2];
        assert_eq!(reads(iff), HashSet::from(["cond", "c"]), "the branch's own value 'inner' is not a read of the enclosing graph");
        let mut pruned = g.clone();
        remove_unread(&mut pruned);
        let kept: Vec<&str> = pruned.node.iter().map(|n| n.op_type()).collect();
        assert_eq!(kept, ["Concat", "If"]);
        let model = ModelProto { graph: Some(pruned), ..Default::default() };
        assert_eq!(validate(&model), Ok(()));
    }

    #[test]
    fn validation_names_the_node_that_reads_an_undefined_value() {
        let mut g = graph_with_if();
        g.node.remove(0);
        let err = validate(&ModelProto { graph: Some(g), ..Default::default() }).unwrap_err();
        assert!(err.contains("node 'INNER' (Relu) reads 'c'") && err.contains("attribute 'then_branch'"), "{err}");
    }

    #[test]
    fn validation_refuses_order_and_double_definitions() {
        let mut g = graph_with_if();
        g.node.swap(0, 2);
        assert!(validate(&ModelProto { graph: Some(g), ..Default::default() }).unwrap_err().contains("reads 'c'"));
        let mut g = graph_with_if();
        g.node[1].output[0] = "c".into();
        assert!(validate(&ModelProto { graph: Some(g), ..Default::default() })
            .unwrap_err()
            .contains("defines 'c', which is already defined"));
        let mut g = graph_with_if();
        g.node[2].attribute[0].g.as_mut().unwrap().node[0].output[0] = "x".into();
        g.node[2].attribute[0].g.as_mut().unwrap().output[0].name = Some("x".into());
        assert!(
            validate(&ModelProto { graph: Some(g), ..Default::default() }).unwrap_err().contains("defines 'x'"),
            "shadowing is refused"
        );
    }

    #[test]
    fn renames_reach_into_subgraphs() {
        let mut g = graph_with_if();
        rename_reads(&mut g, "c", "c2");
        assert_eq!(g.node[2].attribute[0].g.as_ref().unwrap().node[0].input, vec!["c2".to_string()]);
        assert!(defined_names(&g).contains("inner"));
    }
}
