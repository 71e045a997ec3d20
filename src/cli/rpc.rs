//! The CLI's client of the master's cell service.

use borg_common::MasterChannel;
use borg_proto::v1::cell_service_client::CellServiceClient;

/// Largest answer the CLI accepts from the master. tonic's default (4 MiB) is smaller than
/// the job list of a cell the size of the Google trace's (144k tasks: about 7 MB), which
/// `borg job list`, `borg job plan` and `borg job why` read whole.
pub const CELL_MESSAGE_BYTES_MAX: usize = 1 << 30;

/// A cell-service client on `channel` that accepts answers up to `CELL_MESSAGE_BYTES_MAX`.
pub fn cell_client(channel: MasterChannel) -> CellServiceClient<MasterChannel> {
    CellServiceClient::new(channel).max_decoding_message_size(CELL_MESSAGE_BYTES_MAX)
}
