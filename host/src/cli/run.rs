pub fn run(_a: &RunArgs) -> crate::Result<()> {
    Ok(())
}
#[derive(clap::Args, Debug)]
pub struct RunArgs {}
