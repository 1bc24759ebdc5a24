"""A ``CaseView`` frozen to bytes, and thawed again without re-verifying its entries.

Theory of operation
-------------------
Verifying a case from its genesis costs a signature check, a decryption and a
few hashes per entry: 0.33 s per thousand entries, so a CLI command on a
100,000-entry case would spend half a minute redoing what the same device
verified the run before.  ``snapshot`` captures everything a view needs to go
on verifying and sending — heads, entry hashes, the state of every epoch,
commit positions, the epoch secret, receive chains with their skipped keys,
each sender's last update, used slots, held envelopes (by position), message
keys, what others posted since this device's last update, and the sending
chain's position — and ``restore`` rebuilds an equal view from it.

The encoding is the project's strict msgpack (``schemas/codec.py``) with a
leading format version.  The long per-entry columns (heads, entry hashes,
slots, message keys, skipped keys) are fixed-width records concatenated into
one byte string each: the strict decoder bounds arrays at 65,536 items, and a
column of 32-byte cells decodes as one allocation instead of 100,000.

Trust
-----
A snapshot is only as good as the key that sealed it: restoring one believes
it, without re-checking signatures.  So this module never reads one from
anywhere; its caller (``caseline.client.viewstore``) keeps it sealed under the
device's local key, and discards — never half-uses — one that does not open,
has another format version, or was verified under other trust than holds now
(``trust_binding``: a revocation or pin change that concerns a device of the
case makes the snapshot stale, since a view verified from genesis today could
void an update the snapshot opened).  Decoding is strict all the same: a
snapshot that opens but does not decode raises ``MalformedError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final

from caseline.crypto import primitives as P
from caseline.crypto.caselog import CaseView, _Held, entry_hash
from caseline.crypto.certs import TrustStore, VerifiedCert, cert_hash
from caseline.crypto.commits import CaseState, commit_hash, voiding
from caseline.crypto.keys import DeviceKeys
from caseline.crypto.ratchet import Chain
from caseline.schemas.codec import pack, unpack
from caseline.schemas.errors import MalformedError
from caseline.schemas.wire import Commit, DeviceCert, Envelope, Seen, decode_signed

#: Bump on any change to the layout below; older versions are rebuilt, not converted.
SNAPSHOT_VERSION: Final = 1
HASH_SIZE: Final = 32
ID_SIZE: Final = 16
_U64: Final = struct.Struct(">Q")
#: seq -> message key
_KEY_RECORD: Final = struct.Struct(">Q32s")
#: (sender, epoch, counter) -> update id, with a flag for "held or purged, no id"
_SLOT_RECORD: Final = struct.Struct(">16sQQ?32s")


#: Cells cut per ``struct`` call: one C call per block instead of one slice per cell.
_BLOCK: Final = 1024


def _cells(blob: bytes, size: int, what: str) -> list[bytes]:
    if len(blob) % size:
        raise MalformedError(f"snapshot column {what} is not whole {size}-byte cells")
    n = len(blob) // size
    whole = n - n % _BLOCK
    block = struct.Struct(f"{size}s" * _BLOCK)
    cells = [cell for at in range(0, whole * size, _BLOCK * size) for cell in block.unpack_from(blob, at)]
    return cells + [blob[i : i + size] for i in range(whole * size, len(blob), size)]


def _records(blob: bytes, record: struct.Struct, what: str) -> Iterable[tuple[Any, ...]]:
    if len(blob) % record.size:
        raise MalformedError(f"snapshot column {what} is not whole records")
    return record.iter_unpack(blob)


def _keys_blob(keys: Mapping[int, bytes]) -> bytes:
    return b"".join(_KEY_RECORD.pack(seq, key) for seq, key in sorted(keys.items()))


def _keys_from(blob: bytes, what: str) -> dict[int, bytes]:
    return dict(_records(blob, _KEY_RECORD, what))


def _seen(s: Seen) -> list[object]:
    return [s.device_id, s.epoch, s.counter, s.update_id]


def _seen_from(obj: object) -> Seen:
    if not isinstance(obj, list) or len(obj) != 4:
        raise MalformedError("snapshot: a seen entry is [device, epoch, counter, update id]")
    return Seen(device_id=obj[0], epoch=obj[1], counter=obj[2], update_id=obj[3])


def _chain(chain: Chain) -> list[object]:
    return [chain.chain_key, chain.next_index, _keys_blob(chain.skipped)]


def _chain_from(obj: object) -> Chain:
    if not isinstance(obj, list) or len(obj) != 3:
        raise MalformedError("snapshot: a chain is [key, next index, skipped keys]")
    return Chain(chain_key=obj[0], next_index=obj[1], skipped=_keys_from(obj[2], "skipped"))


def trust_binding(view: CaseView, trust: TrustStore) -> bytes:
    """What, of the trust store, the entries of ``view`` were verified under.

    For every device any epoch of the case certified: its agency's pinned root
    and the time that agency revoked it, if it did.  A view rebuilt from
    genesis under a trust store with another binding could decide differently
    (void an update, refuse a commit), so a snapshot bound to another value is
    stale.  Revocations of devices that never were in the case do not matter.
    """
    devices: dict[bytes, DeviceCert] = {}
    for state in view.states.values():
        for device_id, vc in state.certs.items():
            devices[device_id] = vc.cert
    agencies = sorted({cert.agency_id for cert in devices.values()})
    parts: list[bytes] = []
    for agency in agencies:
        root = trust.roots.get(agency)
        parts += [agency.encode(), root or b""]
    for device_id in sorted(devices):
        revoked_at = trust.revoked_at(devices[device_id])
        parts += [device_id, b"" if revoked_at is None else P.u64(revoked_at)]
    return P.hash_labeled("view-trust-binding", *(P.lp(p) for p in parts))


def snapshot(view: CaseView, *, binding: bytes) -> bytes:
    """Encode ``view`` (which must hold a genesis).  Pure: it reads nothing but the view."""
    if view.case_id is None or view.state is None:
        raise MalformedError("only a view that holds its genesis can be snapshotted")
    certs: dict[bytes, int] = {}  # signed certificate -> index: epochs share most of them
    states = []
    for epoch, state in sorted(view.states.items()):
        roster = []
        for device_id in state.members:
            signed = state.certs[device_id].signed
            roster.append(certs.setdefault(signed, len(certs)))
        states.append([epoch, view.commit_seqs[epoch], state.commit_tbs, state.commit_signature, roster])
    held = [
        [seq, h.state.epoch, -1 if h.receipt_time is None else h.receipt_time]
        for seq, h in sorted(view._held.items())
    ]
    slots = b"".join(
        _SLOT_RECORD.pack(sender, epoch, counter, bool(uid), uid or bytes(HASH_SIZE))
        for (sender, epoch, counter), uid in view._slots.items()
    )
    body = [
        SNAPSHOT_VERSION,
        view.case_id,
        view.count,
        binding,
        b"".join(view.heads),
        b"".join(view.entry_hashes),
        list(certs),
        states,
        view._epoch_secret or b"",
        [[sender, _chain(chain)] for sender, chain in sorted(view._chains.items())],
        [_seen(s) for _, s in sorted(view._last.items())],
        slots,
        held,
        _keys_blob(view._message_keys),
        [_seen(s) for _, s in sorted(view._since_own.items())],
        [] if view._send_chain is None else [_chain(view._send_chain)],
        view._own_last,
        view._own_counter,
    ]
    return pack(body)


class Snapshot:
    """A decoded snapshot, before it becomes a view: its caller may still refuse it."""

    def __init__(self, data: bytes) -> None:
        obj = unpack(data, max_size=len(data))
        if not isinstance(obj, list) or not obj or obj[0] != SNAPSHOT_VERSION:
            raise MalformedError("not a case view snapshot of a version this code knows")
        if len(obj) != 18:
            raise MalformedError("snapshot has the wrong number of fields")
        self._obj = obj
        self.case_id: bytes = obj[1]
        self.count: int = obj[2]
        self.binding: bytes = obj[3]
        #: Positions of envelopes held for a later history share: their bodies come from the log.
        self.held_seqs: tuple[int, ...] = tuple(h[0] for h in obj[12])

    def restore(
        self, *, trust: TrustStore, me: DeviceKeys | None, held_bodies: Mapping[int, bytes]
    ) -> CaseView:
        """The view this snapshot froze.  ``held_bodies`` maps each of ``held_seqs`` to its stored body.

        Certificates and commits are rebuilt from their signed bytes without
        re-checking signatures or validity times: they passed when the view
        applied them, and the seal says this device made the snapshot.  Held
        bodies come from outside the seal, so each must hash to the entry hash
        the snapshot holds for its position.
        """
        (
            _,
            case_id,
            count,
            _,
            heads,
            entry_hashes,
            signed_certs,
            states,
            epoch_secret,
            chains,
            last,
            slots,
            held,
            message_keys,
            since_own,
            send_chain,
            own_last,
            own_counter,
        ) = self._obj
        view = CaseView(trust=trust, me=me)
        view.case_id = case_id
        view.heads = _cells(heads, HASH_SIZE, "heads")
        view.entry_hashes = _cells(entry_hashes, HASH_SIZE, "entry hashes")
        if len(view.entry_hashes) != count or len(view.heads) != count + 1:
            raise MalformedError("snapshot heads and entry hashes do not match its count")
        verified = [_verified_cert(signed) for signed in signed_certs]
        for epoch, seq, tbs, signature, roster in states:
            commit = Commit.decode(tbs)
            if commit.epoch != epoch or commit.case_id != case_id or len(roster) != len(commit.roster):
                raise MalformedError("snapshot state does not match its commit")
            certs = {}
            for member, index in zip(commit.roster, roster, strict=True):
                vc = verified[index]
                if vc.device_id != member.device_id or vc.hash != member.cert_hash:
                    raise MalformedError("snapshot roster does not match its commit")
                certs[member.device_id] = vc
            # Voiding is not stored: the snapshot is bound to the revocations it was made under
            # (``trust_binding``), so deriving it again gives what the view decided.
            prev = view.states.get(epoch - 1)
            if epoch and prev is None:
                raise MalformedError("snapshot states do not run from genesis")
            members, voided, voided_committer = voiding(prev, commit, certs, trust=trust)
            view.states[epoch] = CaseState(
                case_id=case_id,
                epoch=epoch,
                commit=commit,
                commit_tbs=tbs,
                commit_signature=signature,
                commit_hash=commit_hash(tbs),
                members=members,
                certs=certs,
                voided=voided,
                voided_committer=voided_committer,
            )
            view.commit_seqs[epoch] = seq
        if not view.states:
            raise MalformedError("snapshot holds no genesis")
        view.state = view.states[max(view.states)]
        view._epoch_secret = epoch_secret or None
        view._chains = {sender: _chain_from(chain) for sender, chain in chains}
        view._last = {s.device_id: s for s in map(_seen_from, last)}
        view._slots.update(
            {
                (sender, epoch, counter): uid if has_id else b""
                for sender, epoch, counter, has_id, uid in _records(slots, _SLOT_RECORD, "slots")
            }
        )
        for seq, epoch, receipt_time in held:
            body = held_bodies.get(seq)
            if body is None or not 0 <= seq < count:
                raise MalformedError("a held envelope of the snapshot is missing from the log")
            if not P.constant_time_equal(entry_hash("update", body), view.entry_hashes[seq]):
                raise MalformedError("a held envelope does not match the snapshot's entry hash")
            view._held[seq] = _Held(
                envelope=Envelope.decode(decode_signed(body)[0]),
                state=view.states[epoch],
                entry_hash=view.entry_hashes[seq],
                receipt_time=None if receipt_time < 0 else receipt_time,
            )
        view._message_keys = _keys_from(message_keys, "message keys")
        view._since_own = {s.device_id: s for s in map(_seen_from, since_own)}
        view._send_chain = _chain_from(send_chain[0]) if send_chain else None
        view._own_last = own_last
        view._own_counter = own_counter
        return view


def _verified_cert(signed: bytes) -> VerifiedCert:
    return VerifiedCert(
        cert=DeviceCert.decode(decode_signed(signed)[0]), signed=signed, hash=cert_hash(signed)
    )
