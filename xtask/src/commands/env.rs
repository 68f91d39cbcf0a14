//! `cargo xtask env`: prints the environment that a plain `cargo build`/`cargo test`, or a crate
//! outside this workspace, needs to link libtorch and TensorFlow; provisions them first if needed.

use parallax_provision::{self as provision, Format};

/// Flags of `cargo xtask env`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The environment of the CUDA builds (`cargo xtask setup --cuda`).
    #[arg(long)]
    pub cuda: bool,
    /// `sh` prints `export` lines for `eval "$(cargo xtask env)"`; `plain` prints `NAME=value`
    /// lines, for `$GITHUB_ENV` or a dotenv file.
    #[arg(long, value_enum, default_value_t = Format::Sh)]
    pub format: Format,
}

/// Runs `cargo xtask env`: progress, if any, goes to stderr, and only the variables to stdout.
pub fn run(args: Args) -> anyhow::Result<()> {
    let env = provision::ensure(args.cuda)?;
    print!("{}", provision::render(&env.vars(), args.format));
    Ok(())
}
