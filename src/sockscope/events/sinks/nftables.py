"""action = "nftables": put each matching event's remote address into an nftables set, through `nft -j -f -`.

sockscope only adds elements to sets the administrator made (with `flags timeout` when a timeout is used):
it never creates or changes tables, sets, chains or rules, so what the firewall does with the set stays in
the administrator's hands. nft is the maintained interface to the kernel's nftables; its JSON input
(libnftables-json(5)) needs no quoting of our own and cannot be steered into other commands by a value.

Latency: the worker takes whatever queued up while nft last ran and sends it as one batch at once (one nft
call is a few milliseconds), so an address is in its set well within 200 ms of the event. An address added
whose element is still in the set (added less than its timeout ago) is not sent again: before Linux 6.10
adding an existing element does not renew its timeout, so a re-add would count as delivered and change
nothing. After the timeout it is added afresh.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sockscope.config import show_value
from sockscope.events.sinks.base import Item, QueuedSink, Report, RuleProblem, check_keys, duration
from sockscope.lru import LruDict
from sockscope.output.safe import printable

FAMILIES = ("ip", "ip6", "inet", "bridge", "netdev", "arp")
SET_EXPECTED = "expected 'FAMILY TABLE SET', e.g. 'inet filter blocked4'"
_NFT_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_./-]{0,254}")  # nft's identifiers; NFT_NAME_MAXLEN is 256
_NETNS_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")  # a file name under /run/netns, as `ip netns` makes them

NFT_QUEUE = 4096  # events waiting for nft; beyond this they are dropped (counted)
BATCH = 512  # events per nft call at most
NFT_TIMEOUT = 5.0  # seconds an nft call may take before it is killed (a wedged netlink must not stall us)
MEMO_ENTRIES = 65536  # addresses remembered as recently added
MEMO_NO_TIMEOUT = 1.0  # without a timeout of ours the set's own is unknown: only de-duplicate bursts
SBIN = "/usr/local/sbin:/usr/sbin:/sbin"  # nft lives in sbin, which a non-login PATH may lack


@dataclass(frozen=True)
class NftSet:
    family: str
    table: str
    name: str

    def __str__(self) -> str:
        return f"{self.family} {self.table} {self.name}"


@dataclass(frozen=True)
class NftablesOptions:
    """`set4`/`set6`: where IPv4/IPv6 remote addresses go (at least one); `timeout`: each element's timeout
    in whole seconds (None: the set's default); `netns`: the named network namespace the sets are in."""

    set4: NftSet | None
    set6: NftSet | None
    timeout: int | None = None
    netns: str | None = None


def parse_set(value: object, key: str) -> NftSet:
    if not isinstance(value, str):
        raise RuleProblem(key, f"{SET_EXPECTED}, got {show_value(value)}")
    parts = value.split()
    if len(parts) != 3:
        raise RuleProblem(key, f"{SET_EXPECTED}, got {show_value(value)}")
    family, table, name = parts
    if family not in FAMILIES:
        raise RuleProblem(key, f"unknown family {show_value(family)}; expected one of {', '.join(FAMILIES)}")
    for what, text in (("table", table), ("set", name)):
        if _NFT_NAME.fullmatch(text) is None:
            raise RuleProblem(key, f"{what} name {show_value(text)} is not an nftables name; {SET_EXPECTED}")
    return NftSet(family, table, name)


def route(raddr: object) -> tuple[int, str] | None:
    """The family (4 or 6) and nft's text of a remote address; an IPv4-mapped IPv6 address is IPv4.
    None for anything that is not an IP address: nft would look a name up in DNS, never send it one."""
    if not isinstance(raddr, str):
        return None
    try:
        addr = ipaddress.ip_address(raddr)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return 4, str(addr.ipv4_mapped)
        return 6, str(ipaddress.IPv6Address(int(addr)))  # without a %scope, which nft does not take
    return 4, str(addr)


def build_batch(additions: Mapping[NftSet, Sequence[str]], timeout: int | None) -> dict[str, object]:
    """nft's JSON batch adding `additions` (set -> addresses); nft runs a batch as one transaction."""
    commands: list[object] = []
    for target, addrs in additions.items():
        elems: list[object] = [a if timeout is None else {"elem": {"val": a, "timeout": timeout}} for a in addrs]
        element = {"family": target.family, "table": target.table, "name": target.name, "elem": elems}
        commands.append({"add": {"element": element}})
    return {"nftables": commands}


def nft_argv(netns: str | None) -> list[str]:
    """How nft is run. In a named namespace through nsenter (util-linux): Python 3.11 has no os.setns, a
    setns() in preexec_fn is unsafe in a threaded daemon, and a fresh nsenter per call also follows a
    namespace that was deleted and made again (`ip netns exec` would also remount /sys: not needed)."""
    nft = shutil.which("nft") or shutil.which("nft", path=SBIN) or "nft"
    if netns is None:
        return [nft, "-j", "-f", "-"]
    nsenter = shutil.which("nsenter") or shutil.which("nsenter", path=SBIN) or "nsenter"
    return [nsenter, f"--net=/run/netns/{netns}", nft, "-j", "-f", "-"]


def _one_line(text: str) -> str:
    # nft's JSON mode prefixes "internal:0:0-0: " to every error: no position exists in JSON input.
    lines = [ln.strip().removeprefix("internal:0:0-0: ") for ln in text.splitlines()]
    return printable("; ".join(ln for ln in lines if ln), limit=300)


class NftablesSink(QueuedSink[NftablesOptions]):
    kind = "nftables"
    option_keys = ("set4", "set6", "timeout", "netns")

    def __init__(self, rule: str, options: NftablesOptions, report: Report) -> None:
        super().__init__(rule, options, report, queue_size=NFT_QUEUE)
        self._memo: LruDict[tuple[NftSet, str], float] = LruDict(MEMO_ENTRIES)
        self._memo_window = float(options.timeout) if options.timeout is not None else MEMO_NO_TIMEOUT
        self._proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def parse_options(cls, table: Mapping[str, object]) -> NftablesOptions:
        check_keys(table, cls.option_keys, cls.kind)
        set4 = parse_set(table["set4"], "set4") if "set4" in table else None
        set6 = parse_set(table["set6"], "set6") if "set6" in table else None
        if set4 is None and set6 is None:
            raise RuleProblem(None, "needs set4 or set6 (or both): the sets remote addresses are added to")
        timeout = None
        if "timeout" in table:
            seconds = duration(table, "timeout")
            if seconds != int(seconds):
                raise RuleProblem("timeout", f"nft takes whole seconds, got {show_value(table['timeout'])}")
            timeout = int(seconds)
        netns = table.get("netns")
        if netns is not None and (
            not isinstance(netns, str) or _NETNS_NAME.fullmatch(netns) is None or netns in (".", "..")
        ):
            expected = "expected the name of a network namespace (a file in /run/netns)"
            raise RuleProblem("netns", f"{expected}, got {show_value(netns)}")
        return NftablesOptions(set4=set4, set6=set6, timeout=timeout, netns=netns)

    def _work(self) -> None:
        while (batch := self.next_batch(BATCH)) is not None:
            self._handle(batch)

    def _abort(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()

    def _handle(self, batch: list[Item]) -> None:
        now = time.monotonic()
        pending: dict[NftSet, dict[str, int]] = {}  # set -> address -> events asking for it
        delivered = skipped = 0
        for event, _ in batch:
            routed = route(event.get("raddr"))
            if routed is None:
                skipped += 1
                self.problem("no-raddr", "an event without a remote address (e.g. tcp_listen) was skipped")
                continue
            family, addr = routed
            target = self.options.set4 if family == 4 else self.options.set6
            if target is None:
                skipped += 1
                self.problem(f"no-set{family}", f"no set{family} for IPv{family} addresses: {addr} and others skipped")
                continue
            added = self._memo.get((target, addr))
            if added is not None and now - added < self._memo_window:
                delivered += 1  # still in the set: a re-add would not renew it on every kernel
                continue
            per_addr = pending.setdefault(target, {})
            per_addr[addr] = per_addr.get(addr, 0) + 1
        self.count(delivered=delivered, skipped=skipped)
        if pending:
            self._add(pending)

    def _add(self, pending: dict[NftSet, dict[str, int]]) -> None:
        error = self._nft(build_batch({s: list(a) for s, a in pending.items()}, self.options.timeout))
        if error is None:
            done = time.monotonic()
            for target, addrs in pending.items():
                for addr in addrs:
                    self._memo[(target, addr)] = done
            self.count(delivered=sum(sum(a.values()) for a in pending.values()))
        elif len(pending) > 1:
            # One transaction: a missing set6 fails the set4 part too. Apart, the working set still gets its
            # addresses and the error is pinned on the set that caused it.
            for target, addrs in pending.items():
                self._add({target: addrs})
        else:
            [(target, addrs)] = pending.items()
            self.count(failed=sum(addrs.values()))
            if self._stopping.is_set():
                return  # close() killed nft: not a problem of the set
            self.problem(
                f"nft:{target}:{error}",
                f"could not add to set {target}: {error}{self._hint(target, error)} "
                "(counted as failed; tried again on later events)",
            )

    def _hint(self, target: NftSet, error: str) -> str:
        """What nft's terse words mean for the two mistakes its JSON mode words worst."""
        if "Could not resolve hostname" in error:  # an address of the other family, read as a host name
            return f"; is it of type {'ipv4_addr' if target == self.options.set4 else 'ipv6_addr'}?"
        if "Invalid argument" in error and self.options.timeout is not None:
            return "; an element's timeout needs a set with flags timeout"
        return ""

    def _nft(self, batch: dict[str, object]) -> str | None:
        """Run nft on one batch: None when it worked, else its message (or why it did not run)."""
        argv = nft_argv(self.options.netns)
        if self._stopping.is_set():
            return "sockscope is stopping"
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True
            )
        except OSError as e:
            hint = " (is nftables installed?)" if self.options.netns is None else ""
            return f"cannot run {argv[0]}: {e.strerror or e}{hint}"
        self._proc = proc
        try:
            _, err = proc.communicate(json.dumps(batch).encode(), timeout=NFT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return f"nft took longer than {NFT_TIMEOUT:g} s and was killed"
        finally:
            self._proc = None
        if proc.returncode == 0:
            return None
        return _one_line(err.decode("utf-8", "replace")) or f"nft exited with status {proc.returncode}"
