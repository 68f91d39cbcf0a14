//! `cargo xtask data`: fetches the built-in data sets into the cache, for users who are online.

use anyhow::Context;
use parallax_core::data::builtin::BuiltinDataset;

use parallax_provision::cache_dir;

/// Flags of `cargo xtask data`.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Downloads a data set from its canonical mirror into the cache, checking every file's SHA-256.
    Download {
        /// fashion-mnist or mnist.
        dataset: BuiltinDataset,
        /// Another mirror with the same file names (for testing, or a local copy).
        #[arg(long)]
        base_url: Option<String>,
    },
}

/// Runs the data subcommand.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args {
        Args::Download { dataset, base_url } => {
            let which = dataset;
            let cache = cache_dir();
            eprintln!("downloading {which} into {}", cache.display());
            let dir = parallax_core::data::download::download(which, &cache, base_url.as_deref())
                .with_context(|| format!("downloading {which}"))?;
            println!("{which} is in {}", dir.display());
            Ok(())
        }
    }
}
