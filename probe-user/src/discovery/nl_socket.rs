//! One request over a blocking netlink socket, and the messages answered until the kernel's
//! ack, the dump's end or an error: the exchange ctnetlink (conntrack) and generic netlink
//! (IPVS) share. The socket has a receive timeout, so a kernel that never answers costs the
//! deadline, not a hang; the async callers run this on a blocking thread.

use std::{fmt::Debug, io, time::Duration};

use netlink_packet_core::{NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable};
use netlink_sys::{Socket, SocketAddr as NlAddr};

/// Why an exchange ended without the whole answer.
#[derive(Debug)]
pub enum NlError {
    Timeout(Duration),
    Io(io::Error),
    Decode(String),
    /// The kernel's error message: this errno (positive).
    Kernel(i32),
}

/// Sends `payload` with `flags` on a new socket of `protocol` and collects the inner messages
/// until the ack (`NLM_F_ACK`), the dump's `NLMSG_DONE` (`NLM_F_DUMP`) or an error.
pub fn exchange<T>(protocol: isize, payload: T, flags: u16, deadline: Duration) -> Result<Vec<T>, NlError>
where
    T: NetlinkSerializable + NetlinkDeserializable + Debug,
{
    let mut socket = Socket::new(protocol).map_err(NlError::Io)?;
    socket.bind_auto().map_err(NlError::Io)?;
    socket.connect(&NlAddr::new(0, 0)).map_err(NlError::Io)?;
    set_receive_timeout(&socket, deadline)?;
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(payload));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(NlError::Io)?;
    let started = std::time::Instant::now();
    let mut answers = Vec::new();
    loop {
        if started.elapsed() > deadline {
            return Err(NlError::Timeout(deadline));
        }
        let (bytes, _) = socket.recv_from_full().map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => NlError::Timeout(deadline),
            _ => NlError::Io(e),
        })?;
        let mut at = 0;
        while at < bytes.len() {
            let message = <NetlinkMessage<T>>::deserialize(&bytes[at..]).map_err(|e| NlError::Decode(e.to_string()))?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok(answers),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(answers),
                        Some(code) => Err(NlError::Kernel(-code.get())),
                    };
                }
                NetlinkPayload::InnerMessage(m) => answers.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            // Messages in one datagram start on 4-byte boundaries (NLMSG_ALIGN).
            at += (len + 3) & !3;
        }
    }
}

fn set_receive_timeout(socket: &Socket, deadline: Duration) -> Result<(), NlError> {
    use std::os::fd::AsFd as _;
    let tv = nix::sys::time::TimeVal::new(
        i64::try_from(deadline.as_secs()).unwrap_or(i64::MAX),
        i64::from(deadline.subsec_micros()).max(i64::from(deadline.is_zero())),
    );
    nix::sys::socket::setsockopt(&socket.as_fd(), nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(|e| NlError::Io(e.into()))
}
