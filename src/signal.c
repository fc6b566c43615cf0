/*
 * signal.c - delivering the kernel's SIGBUS from the fault thread.
 *
 * The kernel raises SIGBUS with si_code BUS_ADRERR and si_addr at the
 * faulting byte when a mapping is touched beyond the end of its file.  The
 * fault thread cannot queue such a signal itself: Linux lets a thread forge
 * a positive si_code only for its own thread id.  So it queues UM_SIGNAL (a
 * real-time signal, si_code SI_QUEUE, the address in si_value) to the
 * faulting thread, whose blocked fault then returns; ummap's handler for
 * UM_SIGNAL, running in that thread, does what the kernel's force_sig would:
 * if SIGBUS is blocked, ignored or defaulted in the thread it kills the
 * process with SIGBUS; otherwise it calls the application's SIGBUS handler
 * with the kernel's siginfo, under the mask the kernel would set.  If that
 * handler returns, the access is retried and faults again, as with the
 * kernel.
 *
 * A fault taken inside a system call (a buffer beyond the end of file passed
 * to write(2)) must instead fail the call with EFAULT and raise nothing.
 * Such a fault cannot be told apart when it arrives, but it repeats at once:
 * the kernel retries a kernel-mode fault without returning to user mode, so
 * the thread faults again on the same page before running UM_SIGNAL's
 * handler.  The fault thread then poisons the page (UFFDIO_POISON), which
 * makes the copy fail with EFAULT, and marks the pending entry; the handler,
 * when the call has returned, sees the mark, removes the poison and raises
 * nothing.  The table of pending entries is shared with the handler through
 * atomics (the handler cannot take locks).
 *
 * While such a call is retried, the thread faults again and again, and the
 * fault thread reads those messages in batches: some are read before the
 * episode ends and handled after it.  They must raise nothing.  A message
 * can only be read while its thread is still inside that fault (the kernel
 * withdraws unread messages when the thread leaves it), so a message read
 * before the thread's handler finished the episode belongs to that episode:
 * the handler stamps its entry with a sequence number, the fault thread
 * notes the number before each read, and an entry stamped after the read
 * makes the batch's messages for it stale.
 */
#include <errno.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

#define PENDING 64
static struct {
	_Atomic pid_t tid;	   /* 0 = free */
	_Atomic uintptr_t page;
	_Atomic int poisoned;
	_Atomic uint64_t done;	   /* 0, or the handler's stamp */
} pending[PENDING];
static _Atomic uint64_t handled;   /* stamps given by the handler */
static uint64_t batch_start;	   /* `handled` when the batch was read */

int um_signal_no(void)
{
	return SIGRTMAX - 3;
}

static void die_sigbus(void)
{
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGBUS, &dfl, NULL);
	sigset_t m;
	sigemptyset(&m);
	sigaddset(&m, SIGBUS);
	pthread_sigmask(SIG_UNBLOCK, &m, NULL);
	syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGBUS);
}

/*
 * Was the thread returning from a system call when UM_SIGNAL arrived (as
 * opposed to re-running a faulting load or store)?  Some kernel paths give
 * up on a fault after one try (a page-pinning call seeing the pending
 * signal) instead of retrying into the poison; the instruction at, or just
 * before, the interrupted address is then `syscall` (0f 05, at the address
 * itself when the call is to be restarted).
 */
static bool interrupted_syscall(const ucontext_t *uc)
{
#if defined(__x86_64__)
	uintptr_t ip = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
	if ((ip & (UM_PAGE - 1)) < 2 || (ip & (UM_PAGE - 1)) > UM_PAGE - 2)
		return false;
	const uint8_t *b = (const uint8_t *)ip;
	return (b[-2] == 0x0f && b[-1] == 0x05) || (b[0] == 0x0f && b[1] == 0x05);
#else
	(void)uc;
	return false;
#endif
}

static void on_um_signal(int sig, siginfo_t *info, void *uctx)
{
	int saved = errno;
	ucontext_t *uc = uctx;
	pid_t self = (pid_t)syscall(SYS_gettid);
	bool in_call = interrupted_syscall(uc);
	for (int i = 0; i < PENDING; i++) {
		if (atomic_load(&pending[i].tid) != self || atomic_load(&pending[i].done))
			continue;
		uintptr_t page = atomic_load(&pending[i].page);
		/* Stamp before reading the mark (see poison_pending). */
		atomic_store(&pending[i].done, atomic_fetch_add(&handled, 1) + 1);
		if (atomic_load(&pending[i].poisoned)) {
			/* Lift the poison: a later access faults afresh. */
			sys_madvise((void *)page, UM_PAGE, MADV_DONTNEED);
			in_call = true;
		}
	}
	if (in_call) {
		/* The fault was inside a system call, which has failed with
		 * EFAULT (or returned early): the kernel raises nothing. */
		errno = saved;
		return;
	}
	siginfo_t si;
	memset(&si, 0, sizeof si);
	si.si_signo = SIGBUS;
	si.si_code = BUS_ADRERR;
	si.si_addr = info->si_value.sival_ptr;

	struct sigaction app;
	sigaction(SIGBUS, NULL, &app);
	bool has_handler = (app.sa_flags & SA_SIGINFO) ? app.sa_sigaction != NULL
						       : (app.sa_handler != SIG_DFL && app.sa_handler != SIG_IGN);
	if (!has_handler || sigismember(&uc->uc_sigmask, SIGBUS)) {
		die_sigbus();
		return;
	}
	sigset_t mask = uc->uc_sigmask, old;
	for (int s = 1; s < NSIG; s++)
		if (sigismember(&app.sa_mask, s) == 1)
			sigaddset(&mask, s);
	if (!(app.sa_flags & SA_NODEFER))
		sigaddset(&mask, SIGBUS);
	if (app.sa_flags & SA_RESETHAND) {
		struct sigaction dfl;
		memset(&dfl, 0, sizeof dfl);
		dfl.sa_handler = SIG_DFL;
		sigaction(SIGBUS, &dfl, NULL);
	}
	pthread_sigmask(SIG_SETMASK, &mask, &old);
	if (app.sa_flags & SA_SIGINFO)
		app.sa_sigaction(SIGBUS, &si, uctx);
	else
		app.sa_handler(SIGBUS);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	(void)sig;
}

int um_signal_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_um_signal;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigemptyset(&sa.sa_mask);
	return sigaction(um_signal_no(), &sa, NULL) < 0 ? -errno : 0;
}

/* Poison one page.  A page evicted or truncated while write-protected
 * keeps a uffd-wp marker in its page table entry, which UFFDIO_POISON
 * refuses (EEXIST): lifting the protection clears the marker. */
static int poison(uintptr_t page)
{
	if (!(um.features & UFFD_FEATURE_POISON))
		return -1;
	for (int tries = 0; tries < 2; tries++) {
		struct uffdio_poison po = { .range = { page, UM_PAGE } };
		if (ioctl(um.uffd, UFFDIO_POISON, &po) == 0)
			return 0;
		if (errno != EEXIST)
			return -1;
		struct uffdio_writeprotect wp = { .range = { page, UM_PAGE }, .mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE };
		ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp);
	}
	return -1;
}

/* The fault thread is about to read a batch of fault messages. */
void um_signal_batch(void)
{
	batch_start = atomic_load(&handled);
}

/*
 * The thread of entry e faulted again on its page, inside a system call:
 * poison the page.  Mark first, so that a handler running as soon as the
 * poison releases the call knows to lift it; stamped already after the
 * poison, the handler may have looked at the mark before it was set or
 * lifted the poison before it was in place: lift it here.
 */
static void poison_pending(int e)
{
	uintptr_t page = atomic_load(&pending[e].page);
	atomic_store(&pending[e].poisoned, 1);
	if (poison(page) < 0) {
		atomic_store(&pending[e].poisoned, 0); /* before Linux 6.6: retries */
		return;
	}
	if (atomic_load(&pending[e].done))
		sys_madvise((void *)page, UM_PAGE, MADV_DONTNEED);
}

/* From the fault thread: SIGBUS at addr in thread tid (see above for a
 * thread that faults again before the signal reached it). */
void um_signal_sigbus(pid_t tid, uintptr_t addr)
{
	uintptr_t page = um_pgdown(addr);
	int slot = -1;
	for (int i = 0; i < PENDING; i++) {
		pid_t t = atomic_load(&pending[i].tid);
		uint64_t done = atomic_load(&pending[i].done);
		if (t == tid && atomic_load(&pending[i].page) == page) {
			if (done > batch_start)
				return; /* read before its episode ended: stale */
			if (!done) {
				/* The fault repeats: poison the page, once
				 * (messages read before the poison was in
				 * place still arrive after it). */
				if (!atomic_load(&pending[i].poisoned))
					poison_pending(i);
				return;
			}
		}
		if ((t == 0 || (done && done <= batch_start)) && slot < 0)
			slot = i;
	}
	if (slot >= 0) {
		atomic_store(&pending[slot].tid, 0);
		atomic_store(&pending[slot].done, 0);
		atomic_store(&pending[slot].page, page);
		atomic_store(&pending[slot].poisoned, 0);
		atomic_store(&pending[slot].tid, tid);
	}
	siginfo_t si;
	memset(&si, 0, sizeof si);
	si.si_signo = um_signal_no();
	si.si_code = SI_QUEUE;
	si.si_pid = getpid();
	si.si_uid = getuid();
	si.si_value.sival_ptr = (void *)addr;
	if (syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, si.si_signo, &si) < 0)
		fprintf(stderr, "ummap: cannot signal thread %d of a fault at %p: %s\n", (int)tid,
			(void *)addr, strerror(errno));
}
