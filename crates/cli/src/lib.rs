//! The `octet` command-line tool, as a library so that tests drive the same code as the binary.

pub mod bench;
pub mod calib_data;
pub mod check;
pub mod compare;
pub mod demo;
pub mod html;
pub mod inputs;
pub mod npy;
pub mod ops_table;
pub mod quantize;
pub mod run;
