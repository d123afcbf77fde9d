package core

// The flow's transitions, one table, as h11's _state.py holds HTTP/1.1's: for each operation, every
// phase a flow waits in (the answer it waits for) and the phases its next step may go to, phaseEnd
// when it answers. Step goes nowhere else (ask and finish consult the table: a step it does not hold
// is a bug, answered as an error and never taken), resume restores only a phase the table holds
// for the state's operation, and abi/ABI.md ("The flow's transitions") renders it
// (TestTransitionsInABI).

// phases is a set of phases.
type phases uint16

func of(ps ...phase) phases {
	var s phases
	for _, p := range ps {
		s |= 1 << p
	}
	return s
}

func (s phases) has(p phase) bool { return p < 16 && s&(1<<p) != 0 }

var transitions = [...]struct {
	op   byte
	from phase
	to   phases
}{
	{OpToken, phaseStart, of(phaseCached, phaseGate)},
	{OpToken, phaseCached, of(phaseGate, phaseEnd)},
	{OpToken, phaseGate, of(phaseLock, phaseMark, phaseSign, phaseSend, phaseEnd)},
	{OpToken, phaseLock, of(phaseRecheck, phaseMark, phaseSign, phaseSend, phaseEnd)},
	{OpToken, phaseRecheck, of(phaseMark, phaseSign, phaseSend, phaseEnd)},
	{OpToken, phaseMark, of(phaseGrant, phaseEnd)},
	{OpToken, phaseGrant, of(phaseSpend, phaseSign, phaseSend, phaseSendLineage, phaseEnd)},
	{OpToken, phaseSpend, of(phaseSign, phaseSend, phaseEnd)},
	{OpToken, phaseSign, of(phaseSend, phaseSendLineage, phaseEnd)},
	{OpToken, phaseSend, of(phaseEnd)},
	{OpToken, phaseSendLineage, of(phaseEnd)},

	{OpInvalidate, phaseStart, of(phaseInvalidate, phaseEnd)},
	{OpInvalidate, phaseInvalidate, of(phaseDrop, phaseEnd)},
	{OpInvalidate, phaseDrop, of(phaseEnd)},

	{OpRevoke, phaseStart, of(phaseGrant, phaseSign, phaseSend)},
	{OpRevoke, phaseGrant, of(phaseSign, phaseSend, phaseSendLineage, phaseEnd)},
	{OpRevoke, phaseSign, of(phaseSend, phaseSendLineage, phaseEnd)},
	{OpRevoke, phaseSend, of(phaseEnd)},
	{OpRevoke, phaseSendLineage, of(phaseEnd)},
}

// next returns where a flow of operation op in phase p may go: none when the table has no such
// phase for op.
func next(op byte, p phase) phases {
	for _, t := range transitions {
		if t.op == op && t.from == p {
			return t.to
		}
	}
	return 0
}

// resumable reports whether a state may hold phase p of operation op: a phase the flow waits in
// (a state is written only once a step has asked for an answer, so never at the start).
func resumable(op byte, p phase) bool { return p != phaseStart && next(op, p) != 0 }

// to moves f to phase p if the table allows it.
func (f *Flow) to(p phase) bool {
	if !next(f.op, f.phase).has(p) {
		return false
	}
	f.phase = p
	return true
}

// strayStep answers a step the table does not hold.
func strayStep() []byte {
	return errorJSON(invalidRequest("token_step: the flow cannot take this step"))
}
