package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// Opens allowed in spite of the verdict: audit mode and the allow lists.
//
// A detection is made, cached and counted the same whatever the policy:
// the verdict, with the SHA-256 digest of the bytes clamd judged, taken
// from the scanned descriptor after clamd's reply and before the check
// that the file did not change under the scan (so a file that changed is
// scanned, and hashed, again). Only detections are hashed. The policy in
// force when an open is decided then says what the open gets:
//
//  1. the digest is in scan.allow_sha256: allowed (allowed-sha256), a
//     false positive the admin vouched for by its exact contents;
//  2. the signature is in scan.allow_signatures: allowed
//     (allowed-signature);
//  3. audit mode: allowed (audit-infected);
//  4. else denied (infected).
//
// In audit mode an open denied for want of a verdict (error, oversize,
// unstable) is allowed too (audit-error, audit-oversize, audit-unstable);
// an interrupted open is not (its opener is gone). Every such allowance
// is logged at WARN (report) and counted by reason. The cache holds
// verdicts, never allowances: a reload that changes the mode or a list
// applies at the next open of every file, cached or not, and a cached
// detection is never hashed again.

// allowances applies the audit mode and the allow lists of p to d.
func allowances(p *Policy, d Decision) Decision {
	if d.Allow {
		return d
	}
	switch d.Reason {
	case ReasonInfected:
		switch {
		case d.Verdict.SHA256 != "" && p.AllowSHA256[d.Verdict.SHA256]:
			d.Allow, d.Reason = true, ReasonAllowedSHA256
		case p.AllowSignatures[d.Verdict.Signature]:
			d.Allow, d.Reason = true, ReasonAllowedSignature
		case p.Audit:
			d.Allow, d.Reason = true, ReasonAuditInfected
		}
	case ReasonError:
		d.Allow, d.Reason = p.Audit, audit(p, ReasonError, ReasonAuditError)
	case ReasonOversize:
		d.Allow, d.Reason = p.Audit, audit(p, ReasonOversize, ReasonAuditOversize)
	case ReasonUnstable:
		d.Allow, d.Reason = p.Audit, audit(p, ReasonUnstable, ReasonAuditUnstable)
	}
	return d
}

func audit(p *Policy, enforce, audit Reason) Reason {
	if p.Audit {
		return audit
	}
	return enforce
}

// sha256Of is the SHA-256 digest, in lower-case hex, of the first size
// bytes of f, read with pread (f's offset does not move).
func sha256Of(f *os.File, size int64) (string, error) {
	h := sha256.New()
	bp := sumBufs.Get().(*[]byte)
	defer sumBufs.Put(bp)
	n, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, size), *bp)
	if err != nil {
		return "", fmt.Errorf("reading for the SHA-256 digest: %w", err)
	}
	if n < size {
		return "", errShort
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
