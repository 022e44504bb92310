//! The errors a user can meet: each names the node, op, shapes or file involved.

/// An error from building, checking or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op rejected its inputs or attributes.
    #[error("node '{node}' ({op}): {message}")]
    Node { node: String, op: String, message: String },
    /// The model uses an operator the registry does not have.
    #[error(
        "node '{node}': operator '{op}'{domain} (opset {opset}) is not supported; closest supported: {closest}. \
         `octet ops` lists every supported operator"
    )]
    UnsupportedOp { node: String, op: String, domain: String, opset: u32, closest: String },
    /// The caller's inputs do not fit the model.
    #[error("{0}")]
    Input(String),
    /// The graph itself is malformed.
    #[error("invalid graph: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The result type of op implementations: a message that the caller wraps into
/// [`Error::Node`] with the node's name.
pub type OpResult<T> = std::result::Result<T, String>;
