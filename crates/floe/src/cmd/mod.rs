//! One module per subcommand.
pub mod serve;
pub mod signal;
pub mod stun;
pub mod token;
