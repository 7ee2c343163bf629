//! `ota-peer` (see DESIGN.md §1).
//!
//! Not implemented yet: the peer node issue builds this program. The crate exists so that the workspace
//! layout is fixed; it has no binary until the program does something real.
