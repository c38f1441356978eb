# vmsessiond: the two commands a newcomer needs are `make run` and `make test`.
# `make run` installs what building and running need (`make deps`: Debian packages, the libvirt-qemu user);
# `make test` adds the test tooling (`make deps-test`: more Debian packages and the tests' PyPI packages).
# No install path (`make install`, `make install-user`, `make deb`) installs test tooling or touches pip.

SHELL := /bin/bash
SWIFT ?= swift
CACHE ?= $(CURDIR)/.cache
APPLIANCE_DIR ?= $(CACHE)/appliance
STATE_DIR ?= $(CACHE)/state
LISTEN ?= 127.0.0.1:7011
# Guests hang under KVM on the development machines; `auto` picks KVM wherever /dev/kvm is usable.
ACCELERATOR ?= tcg
BUILD_FLAGS ?=
SUDO ?= $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# What the daemon runs with: libvirt's embedded QEMU driver (libvirt-daemon brings its helpers, e.g.
# libvirt_iohelper), QEMU, qemu-img, genisoimage (seed ISOs), the guests' network sandbox (passt and pasta,
# socat, ip from iproute2, which reads protocol names from netbase's /etc/protocols), noVNC and xterm.js
# (served to pages). packaging/deb/control.in names the same.
RUNTIME_PACKAGES := libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils genisoimage passt socat iproute2 netbase \
	novnc libjs-xterm node-xterm
# What building needs: the C libraries' headers (libcurl's: Foundation's URLSession, linked statically in the
# release build, takes libcurl from the system), and the appliance's tools (Contextualization/appliance/build.sh).
BUILD_PACKAGES := libvirt-dev libsqlite3-dev libxss-dev libxext-dev libx11-dev libsystemd-dev libwayland-dev libcurl4-openssl-dev \
	busybox-static kmod cpio
# What only the tests and benchmarks need: Chromium, X11/Wayland sessions to drive idle detection, load
# tools, the protocol XML for `make wayland-protocols`, the package test's tools (mmdebstrap, bwrap,
# systemd-analyze), and sshd for the libvirt hosts the many-hosts tests reach over SSH (SSHLibvirtHost), with
# virsh for the benchmarks' Python twin of it (Benchmarks/sshhost.py defines the host's storage pool with it).
TEST_PACKAGES := curl procps wrk python3 python3-pip chromium xvfb xdotool x11-utils \
	wayland-protocols plasma-wayland-protocols sway mutter dbus-daemon python3-dbus \
	mmdebstrap bubblewrap systemd prometheus openssh-server libvirt-clients
APT_PACKAGES := $(RUNTIME_PACKAGES) $(BUILD_PACKAGES)
# The Wayland idle protocols' C glue (Sources/CWaylandIdle/generated) is wayland-scanner's output for these.
WAYLAND_IDLE := Sources/CWaylandIdle
PYTHON ?= python3
# The contract tests' Python packages (openapi-spec-validator, schemathesis, pytest).
CONTRACT_REQUIREMENTS := Tests/Contract/requirements.txt
BROWSER_TESTS := Tests/Browser

# Installs the Debian packages in $(1) that are missing.
define apt_install
@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing:" $$missing; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

.PHONY: wayland-protocols all deps deps-test appliance debian-guest test-debian test-debian-warm build build-tests release stage run test test-unit test-e2e test-contract test-browser test-package bench bench-quick chaos chaos-quick install install-user deb tarball clean help

all: build

help:
	@echo "make run    install what is missing, build, and start vmsessiond on $(LISTEN)"
	@echo "make test   install what is missing, build, and run every test"
	@echo "make bench  what the daemon costs over libvirt, and the idle controller on Xvfb + a real guest (QUICK=1: few runs)"
	@echo "make deb    the Debian package, artifacts/vmsessiond_<version>_amd64.deb (make tarball: for other distributions)"
	@echo "make install       system mode: root, /usr/local and /etc, the system unit"
	@echo "make install-user  user mode: no root, ~/.local and the systemd user unit bound to the graphical session"
	@echo "make chaos  kill -9 the daemon and its qemu at random points, check what survives (CHAOS_ROUNDS=50)"
	@echo "make debian-guest  a Debian 12 guest with cloud-init (.cache/debian/debian.qcow2); make test-debian boots it under TCG"
	@echo "make test-debian-warm  the Debian guest warm from templates too (10-30 min, not in CI)"
	@echo "make deps | deps-test | appliance | build | release | test-unit | test-e2e | test-contract | test-browser | test-package | bench | chaos-quick | wayland-protocols | clean"

# The Debian packages building and running need, and the system user the embedded QEMU driver insists on.
deps:
	$(call apt_install,$(APT_PACKAGES))
	@getent passwd libvirt-qemu >/dev/null || $(SUDO) useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu

# The tests' own tooling: more Debian packages, and the contract and browser tests' PyPI packages
# (into this Python; on Debian 12 that takes --break-system-packages). Only test and benchmark targets use it.
deps-test: deps
	$(call apt_install,$(TEST_PACKAGES))
	@$(PYTHON) -c 'import pytest, openapi_spec_validator, schemathesis' 2>/dev/null || \
		$(PYTHON) -m pip install -q -r $(CONTRACT_REQUIREMENTS) || \
		$(PYTHON) -m pip install -q --break-system-packages -r $(CONTRACT_REQUIREMENTS)
	@$(PYTHON) -c 'import pytest, websocket' 2>/dev/null || $(PYTHON) -m pip install -q -r $(BROWSER_TESTS)/requirements.txt || \
		$(PYTHON) -m pip install -q --break-system-packages -r $(BROWSER_TESTS)/requirements.txt

# Regenerates the committed Wayland protocol glue from Debian's XML (committed so that a build needs no scanner).
wayland-protocols: deps-test
	cp /usr/share/plasma-wayland-protocols/idle.xml $(WAYLAND_IDLE)/protocols/kde-idle.xml
	cp /usr/share/wayland-protocols/staging/ext-idle-notify/ext-idle-notify-v1.xml $(WAYLAND_IDLE)/protocols/
	for p in kde-idle ext-idle-notify-v1; do \
		wayland-scanner client-header $(WAYLAND_IDLE)/protocols/$$p.xml $(WAYLAND_IDLE)/generated/$$p-client-protocol.h && \
		wayland-scanner private-code $(WAYLAND_IDLE)/protocols/$$p.xml $(WAYLAND_IDLE)/generated/$$p-protocol.c || exit 1; \
	done

appliance: deps
	@bash Contextualization/appliance/build.sh $(APPLIANCE_DIR)

# A real guest: Debian 12 with systemd and cloud-init (NoCloud), one qcow2 disk built from Debian packages
# with mmdebstrap (from deb.debian.org) into $(DEBIAN_DIR), rebuilt only when its inputs change
# (Contextualization/debian/build.sh; as root, for mmdebstrap's root mode). Register it with
# `vmsessionctl images add debian $(DEBIAN_DIR)/debian.qcow2`.
DEBIAN_DIR ?= $(CACHE)/debian
DEBIAN_BUILD_PACKAGES := mmdebstrap grub-pc-bin fdisk e2fsprogs qemu-utils
debian-guest: deps
	$(call apt_install,$(DEBIAN_BUILD_PACKAGES))
	@$(SUDO) bash Contextualization/debian/build.sh $(DEBIAN_DIR)

# One build configuration for everything (`--build-tests`): `make run` after `make test`, or the other way
# round, compiles nothing again (a plain `swift build` and a test build differ in flags and would rebuild
# each other's modules).
build: deps
	$(SWIFT) build $(BUILD_FLAGS) --build-tests

run: appliance build
	@mkdir -p $(STATE_DIR)
	exec "$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path)/vmsessiond" --listen $(LISTEN) \
		--state-dir $(STATE_DIR) --appliance-dir $(APPLIANCE_DIR) --accelerator $(ACCELERATOR)

# Unit and route tests (test:///default, in-memory SQLite) and the end-to-end tests that start the
# real daemon: on the test driver, and booting the appliance under TCG. `--build-tests` builds the daemon
# and the tests in one configuration, so nothing is compiled twice.
TEST_ENV = BIN=$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path); \
	export VMSESSIOND_BINARY=$$BIN/vmsessiond VMSESSIONCTL_BINARY=$$BIN/vmsessionctl VMSESSIOND_TEST_APPLIANCE=$(APPLIANCE_DIR);

build-tests: deps-test
	$(SWIFT) build $(BUILD_FLAGS) --build-tests

# The browser tests: a headless Chromium loads vmsession.js from the real daemon into a page of another
# origin, and the daemon's own page; screenshots go to artifacts/browser/.
PYTEST = PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m pytest -p no:cacheprovider -s -q $(BROWSER_TESTS)

# Each step of `make test` says how long it took (`== <step> took N s`), so that a CI log shows where its time goes.
define timed
@echo "== $(1)"; start=$$(date +%s); $(2); status=$$?; echo "== $(1) took $$(( $$(date +%s) - start )) s"; exit $$status
endef

test: appliance build-tests
	$(call timed,appliance boot check,bash Contextualization/appliance/test-boot.sh $(APPLIANCE_DIR))
	$(call timed,Swift tests,$(TEST_ENV) $(SWIFT) test $(BUILD_FLAGS) --skip-build)
	$(call timed,contract tests,$(TEST_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider Tests/Contract)
	$(call timed,browser tests,$(TEST_ENV) $(PYTEST))
	$(call timed,package test,$(MAKE) --no-print-directory test-package)
	$(call timed,chaos-quick,$(MAKE) --no-print-directory chaos-quick)
	$(call timed,bench-quick,$(MAKE) --no-print-directory bench-quick)

test-browser: build-tests
	$(TEST_ENV) $(PYTEST)

test-unit: build-tests
	$(SWIFT) test $(BUILD_FLAGS) --skip-build --skip EndToEndTests

test-e2e: appliance build-tests
	$(TEST_ENV) $(SWIFT) test $(BUILD_FLAGS) --skip-build --filter EndToEndTests

# The Debian guest under real cloud-init (Tests/EndToEndTests/DebianGuestTests.swift): two cold boots under
# TCG, minutes each, so not part of `make test`; CI runs it after (.ci/run).
test-debian: debian-guest build-tests
	$(TEST_ENV) export VMSESSIOND_TEST_DEBIAN=$(DEBIAN_DIR); $(SWIFT) test $(BUILD_FLAGS) --skip-build --filter DebianGuestTests

# The Debian guest started warm from templates (a session's and a warm-up's): cloud-init runs again in each
# warm session, minutes each under TCG, so 10-30 minutes in all; not in CI.
test-debian-warm: debian-guest build-tests
	$(TEST_ENV) export VMSESSIOND_TEST_DEBIAN=$(DEBIAN_DIR) VMSESSIOND_TEST_DEBIAN_WARM=1; $(SWIFT) test $(BUILD_FLAGS) --skip-build --filter DebianGuestTests

# Not tests: what the daemon costs over libvirt itself, side by side in one run
# (Benchmarks/daemon_overhead.py), and the idle-aware controller on real parts: Xvfb, xdotool and a busy
# TCG guest (Benchmarks/idle_bench.py: input -> cap latency on X11 (XSync alarms, and the polled XScreenSaver fallback) and on
# Wayland (sway), the daemon's CPU while idle, cap accuracy); hibernate and restore of a 256 MiB and a 1 GiB guest beside libvirt's
# own managed save (Benchmarks/hibernate_bench.py); sessions on an SSH-reached libvirt host against local ones, and placement
# over many hosts (Benchmarks/hosts_bench.py, with Benchmarks/sshhost.py).
# `make bench` measures the release build that installs ship (`make release`'s, with the benchmark's peer); QUICK=1 (and `make test`, through bench-quick) runs a few of each
# with the debug build so that the benchmark code never rots, without judging its numbers.
BENCH_OUT ?= $(CURDIR)/artifacts/bench.json
# The Debian guest's rows of template_bench (a cold boot and warm sessions with real cloud-init, minutes each
# under TCG), when `make debian-guest` has built it; not in bench-quick.
DEBIAN_BENCH = $(if $(wildcard $(DEBIAN_DIR)/debian.qcow2),--debian $(DEBIAN_DIR)/debian.qcow2)
bench: appliance deps-test
ifeq ($(QUICK),1)
	$(MAKE) --no-print-directory bench-quick
else
	$(if $(DEBIAN_BENCH),,@echo "template_bench: no $(DEBIAN_DIR)/debian.qcow2, so the Debian guest's rows are skipped (\`make debian-guest\` builds it)")
	$(SWIFT) build $(RELEASE_FLAGS)
	bin=$(RELEASE_BIN); \
		python3 Benchmarks/daemon_overhead.py --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer \
			--appliance $(APPLIANCE_DIR) --out $(BENCH_OUT) && \
		python3 Benchmarks/idle_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/idle_bench.json && \
		python3 Benchmarks/hibernate_bench.py --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer --appliance $(APPLIANCE_DIR) \
			--out $(CURDIR)/artifacts/hibernate_bench.json && \
		python3 Benchmarks/cap_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/cap_bench.json && \
		python3 Benchmarks/console_bench.py --binary $$bin/vmsessiond --peer $$bin/vmsessionbench-peer --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/console_bench.json && \
		python3 Benchmarks/snapshot_bench.py --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/snapshot_bench.json && \
		python3 Benchmarks/template_bench.py --daemon $$bin/vmsessiond --appliance $(APPLIANCE_DIR) $(DEBIAN_BENCH) \
			--out $(CURDIR)/artifacts/template_bench.json && \
		python3 Benchmarks/hosts_bench.py --daemon $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/hosts_bench.json
endif

bench-quick: appliance build-tests
	bin=$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path); \
		python3 Benchmarks/daemon_overhead.py --quick --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer \
			--appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/bench-quick.json && \
		QUICK=1 python3 Benchmarks/idle_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/idle_bench-quick.json && \
		QUICK=1 python3 Benchmarks/hibernate_bench.py --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer --appliance $(APPLIANCE_DIR) \
			--out $(CURDIR)/artifacts/hibernate_bench-quick.json && \
		QUICK=1 python3 Benchmarks/cap_bench.py --binary $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/cap_bench-quick.json && \
		QUICK=1 python3 Benchmarks/console_bench.py --binary $$bin/vmsessiond --peer $$bin/vmsessionbench-peer --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/console_bench-quick.json && \
		QUICK=1 python3 Benchmarks/snapshot_bench.py --daemon $$bin/vmsessiond --peer $$bin/vmsessionbench-peer --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/snapshot_bench-quick.json && \
		QUICK=1 python3 Benchmarks/template_bench.py --daemon $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/template_bench-quick.json && \
		QUICK=1 python3 Benchmarks/hosts_bench.py --daemon $$bin/vmsessiond --appliance $(APPLIANCE_DIR) --out $(CURDIR)/artifacts/hosts_bench-quick.json

# Chaos: the real daemon on the embedded driver with real appliance guests, killed with SIGKILL at random
# points of open, start, pause, hibernate, restore, stop, close, snapshots, making a template and a warm
# start from one, and with its qemu killed; after every
# restart it checks events, state against the VMs, orphans, the database and the next action, and prints
# the counts (Tests/Chaos/chaos.py). CHAOS_ROUNDS sets the rounds (50 by default; chaos-quick runs 5,
# for `make test`); CHAOS_SEED replays a run. CHAOS_HOSTS=1 adds an SSH-reached libvirt host that is lost
# (libvirtd killed, sshd stopped) at random (root only; chaos-quick does not: its rounds take minutes).
CHAOS_ROUNDS ?= 50
chaos: appliance build-tests
	bin=$$($(SWIFT) build $(BUILD_FLAGS) --build-tests --show-bin-path); \
		CHAOS_ROUNDS=$(CHAOS_ROUNDS) $(PYTHON) Tests/Chaos/chaos.py --daemon $$bin/vmsessiond --appliance $(APPLIANCE_DIR)

chaos-quick: appliance build-tests
	$(MAKE) --no-print-directory chaos CHAOS_ROUNDS=5

# The HTTP contract (Schema/openapi.yaml): validated, served, and checked by schemathesis against the real
# daemon on the test driver (no VM boots).
test-contract: build-tests
	$(TEST_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider Tests/Contract

# The release build every install path ships: the Swift runtime linked statically, so an installed
# vmsessiond needs no toolchain (only Debian's libvirt, SQLite, X11, Wayland and systemd libraries).
# Its own scratch path, so that it and the debug build (`make run`, `make test`) never rebuild each other.
RELEASE_SCRATCH ?= $(CURDIR)/.build-release
RELEASE_FLAGS = -c release --static-swift-stdlib --scratch-path $(RELEASE_SCRATCH)
RELEASE_BIN = $$($(SWIFT) build $(RELEASE_FLAGS) --show-bin-path)
release: deps
	$(SWIFT) build $(RELEASE_FLAGS) --product vmsessiond
	$(SWIFT) build $(RELEASE_FLAGS) --product vmsessionctl

# What every install path lays out under $(DESTDIR)$(PREFIX): the binaries (stripped of their debug
# information, which is most of their size) with their resource bundles in
# lib/vmsessiond (linked from bin), the test appliance in share/vmsessiond/appliance (where the daemon
# looks first, from its own path), the docs and an example config with every
# default in share/doc/vmsessiond.
stage: release appliance
	install -d $(DESTDIR)$(PREFIX)/lib/vmsessiond $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/vmsessiond/appliance \
		$(DESTDIR)$(PREFIX)/share/doc/vmsessiond
	bin=$(RELEASE_BIN); \
		install --strip -m 0755 $$bin/vmsessiond $$bin/vmsessionctl $(DESTDIR)$(PREFIX)/lib/vmsessiond/ && \
		for r in $$bin/vmsessiond_*.resources; do \
			rm -rf $(DESTDIR)$(PREFIX)/lib/vmsessiond/$$(basename $$r) && cp -R --no-preserve=mode,ownership $$r $(DESTDIR)$(PREFIX)/lib/vmsessiond/ || exit 1; \
		done
	ln -sfn ../lib/vmsessiond/vmsessiond $(DESTDIR)$(PREFIX)/bin/vmsessiond
	ln -sfn ../lib/vmsessiond/vmsessionctl $(DESTDIR)$(PREFIX)/bin/vmsessionctl
	install -m 0644 $(APPLIANCE_DIR)/vmlinuz $(APPLIANCE_DIR)/initrd.img $(APPLIANCE_DIR)/cmdline $(DESTDIR)$(PREFIX)/share/vmsessiond/appliance/
	install -m 0644 README.md Schema/openapi.yaml $(DESTDIR)$(PREFIX)/share/doc/vmsessiond/
	install -m 0644 systemd/config.json $(DESTDIR)$(PREFIX)/share/doc/vmsessiond/config.example.json

# System mode: the staged layout under $(PREFIX), the system unit, and /etc/vmsessiond/config.json (kept if present).
PREFIX ?= /usr/local
install: stage
	install -d $(DESTDIR)/etc/vmsessiond $(DESTDIR)/etc/systemd/system
	sed 's|/usr/local/|$(PREFIX)/|g' systemd/vmsessiond.service > $(DESTDIR)/etc/systemd/system/vmsessiond.service
	[ -f $(DESTDIR)/etc/vmsessiond/config.json ] || install -m 0644 systemd/config.json $(DESTDIR)/etc/vmsessiond/config.json
	@echo "Installed. Start it with: systemctl daemon-reload && systemctl enable --now vmsessiond"

# User mode, no root: the same layout under ~/.local, with the systemd *user* unit (bound to the graphical
# session). The daemon keeps its state in $$XDG_STATE_HOME/vmsessiond.
USER_PREFIX ?= $(HOME)/.local
USER_UNIT_DIR ?= $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/systemd/user
install-user:
	$(MAKE) --no-print-directory stage PREFIX=$(USER_PREFIX) DESTDIR=
	install -d $(USER_UNIT_DIR)
	sed 's|%h/.local/|$(USER_PREFIX)/|g' systemd/user/vmsessiond.service > $(USER_UNIT_DIR)/vmsessiond.service
	@echo "Installed for $$USER. Start it with: systemctl --user daemon-reload && systemctl --user enable --now vmsessiond"

# The Debian package (packaging/deb): the layout under /usr, both units, maintainer scripts, and the
# dependencies dpkg-shlibdeps reads from the binaries plus the programs the daemon runs.
# Written to $(DEB_DIR)/vmsessiond_<version>_amd64.deb, the version being `vmsessiond --version`.
DEB_DIR ?= $(CURDIR)/artifacts
DEB_STAGE := $(CACHE)/deb-root
PACKAGING_PACKAGES := dpkg-dev
deb:
	$(call apt_install,$(PACKAGING_PACKAGES))
	rm -rf $(DEB_STAGE)
	$(MAKE) --no-print-directory stage PREFIX=/usr DESTDIR=$(DEB_STAGE)
	bash packaging/deb/build.sh $(DEB_STAGE) $(DEB_DIR)

# A tarball for other distributions: the same /usr/local layout with both units, unpacked with
# `tar -C / -xzf` (what the system must provide is in its share/doc/vmsessiond/INSTALL.txt).
tarball:
	rm -rf $(CACHE)/tar-root
	$(MAKE) --no-print-directory stage PREFIX=/usr/local DESTDIR=$(CACHE)/tar-root
	bash packaging/tarball.sh $(CACHE)/tar-root $(DEB_DIR)

# The package as a user gets it: `make deb`, installed with apt into a clean Debian 12 root (mmdebstrap,
# cached in $(CACHE)/package-test), where the installed daemon boots the appliance as an unprivileged user;
# then `dpkg -r` must leave none of its files behind (packaging/test-package.sh).
test-package: deps-test deb
	$(SUDO) bash packaging/test-package.sh $(DEB_DIR) $(CACHE)/package-test

clean:
	rm -rf .build $(RELEASE_SCRATCH) $(CACHE)
