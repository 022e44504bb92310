//! Node attributes, independent of the file format they came from.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::OpResult;
use crate::graph::Body;
use crate::tensor::Tensor;

/// One attribute value.
#[derive(Clone, Debug)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    String(String),
    Strings(Vec<String>),
    Tensor(Tensor),
    /// A subgraph (If's branches, Loop's and Scan's body).
    Graph(Arc<Body>),
}

/// The attributes of a node by name.
#[derive(Clone, Debug, Default)]
pub struct Attrs(pub HashMap<String, Attr>);

impl Attrs {
    pub fn get(&self, name: &str) -> Option<&Attr> {
        self.0.get(name)
    }

    /// An int attribute, `None` when absent.
    pub fn int(&self, name: &str) -> OpResult<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(format!("attribute '{name}' must be an int, got {other:?}")),
        }
    }

    pub fn int_or(&self, name: &str, default: i64) -> OpResult<i64> {
        Ok(self.int(name)?.unwrap_or(default))
    }

    /// A float attribute (an int is taken as a float), `None` when absent.
    pub fn float(&self, name: &str) -> OpResult<Option<f32>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(other) => Err(format!("attribute '{name}' must be a float, got {other:?}")),
        }
    }

    pub fn float_or(&self, name: &str, default: f32) -> OpResult<f32> {
        Ok(self.float(name)?.unwrap_or(default))
    }

    /// A list-of-strings attribute, `None` when absent.
    pub fn strings(&self, name: &str) -> OpResult<Option<Vec<String>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Strings(v)) => Ok(Some(v.clone())),
            Some(other) => Err(format!("attribute '{name}' must be a list of strings, got {other:?}")),
        }
    }

    pub fn ints(&self, name: &str) -> OpResult<Option<Vec<i64>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(format!("attribute '{name}' must be a list of ints, got {other:?}")),
        }
    }

    pub fn floats(&self, name: &str) -> OpResult<Option<Vec<f32>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(Attr::Float(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(format!("attribute '{name}' must be a list of floats, got {other:?}")),
        }
    }

    pub fn string_or(&self, name: &str, default: &str) -> OpResult<String> {
        match self.get(name) {
            None => Ok(default.to_string()),
            Some(Attr::String(v)) => Ok(v.clone()),
            Some(other) => Err(format!("attribute '{name}' must be a string, got {other:?}")),
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        match self.get(name) {
            Some(Attr::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// A subgraph attribute, or an error naming it.
    pub fn graph(&self, name: &str) -> OpResult<Arc<Body>> {
        match self.get(name) {
            Some(Attr::Graph(g)) => Ok(g.clone()),
            _ => Err(format!("the '{name}' subgraph attribute is required")),
        }
    }
}
