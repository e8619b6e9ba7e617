package fs

import "testing"

func TestDeriveLimits(t *testing.T) {
	for _, tc := range []struct {
		nofile, perUser int
		want            Limits
	}{
		{1024, 0, Limits{NoFile: 1024, Reserve: 128, DirFDs: 128, Orphans: 16, MaxOpen: 752, MaxOpenPerUser: 188}},
		{4096, 0, Limits{NoFile: 4096, Reserve: 512, DirFDs: 512, Orphans: 64, MaxOpen: 3008, MaxOpenPerUser: 752}},
		{20000, 0, Limits{NoFile: 20000, Reserve: 2500, DirFDs: 2500, Orphans: 256, MaxOpen: 14744, MaxOpenPerUser: 3686}},
		{524288, 0, Limits{NoFile: 524288, Reserve: 4096, DirFDs: 4096, Orphans: 256, MaxOpen: 515840, MaxOpenPerUser: 128960}},
		{4096, 100, Limits{NoFile: 4096, Reserve: 512, DirFDs: 512, Orphans: 64, MaxOpen: 3008, MaxOpenPerUser: 100}},
		{64, 0, Limits{NoFile: 64, Reserve: 64, DirFDs: 16, Orphans: 8, MaxOpen: 1, MaxOpenPerUser: 1}},
	} {
		if got := DeriveLimits(tc.nofile, tc.perUser); got != tc.want {
			t.Errorf("DeriveLimits(%d, %d) = %+v, want %+v", tc.nofile, tc.perUser, got, tc.want)
		}
	}
}
