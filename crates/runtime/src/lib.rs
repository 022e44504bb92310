//! octet's engine. A [`Session`] loads a graph and makes one [`Plan`] per set of input shapes:
//! the graph specialised to those shapes (`octet-graph`), rewritten by the pass list
//! ([`passes`]: the float fusions, then for the int8 engine the lowering of QDQ patterns to the
//! int8 kernels of [`lower`]), then run node by node. It depends on the graph and kernel crates
//! only: the quantizer runs sessions, never the reverse.

pub mod lower;
pub mod passes;
pub mod session;
pub mod subgraphs;

pub use passes::{specialize, Engine, Target};
pub use session::{Hooks, NoHooks, Plan, Reload, Session};
