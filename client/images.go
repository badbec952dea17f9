package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// ImageInfo describes an image msbd holds.
type ImageInfo struct {
	Ref     string    `json:"ref" yaml:"ref"`         // the reference as written when pulled
	Name    string    `json:"name" yaml:"name"`       // canonical name, e.g. index.docker.io/library/python:3.12
	Digest  string    `json:"digest" yaml:"digest"`   // image manifest digest, "sha256:..."
	Size    int64     `json:"size" yaml:"size"`       // unpacked bytes
	Layers  []string  `json:"layers" yaml:"layers"`   // diffIDs, lowest first
	Created time.Time `json:"created" yaml:"created"` // from the image config
	Pulled  time.Time `json:"pulled" yaml:"pulled"`   // when msbd recorded the reference with this content
	InUse   int       `json:"inUse" yaml:"inUse"`     // sandboxes using the image
}

// PullProgress reports a layer download of PullImage. Done grows; Complete is set
// once the layer is in msbd's store (at once, with Done = Total, for a layer it held).
type PullProgress struct {
	Layer    string `json:"layer"` // digest of the compressed layer, "sha256:..."
	Total    int64  `json:"total"`
	Done     int64  `json:"done"`
	Complete bool   `json:"complete"`
}

// Pull failure reasons, in APIError.Reason of PullImage's error.
const (
	ReasonPullFailed   = "PullFailed"   // the registry or the transfer failed (Status 502)
	ReasonInvalidImage = "InvalidImage" // msb refuses the image's content (Status 422)
	ReasonNotPresent   = "NotPresent"   // policy Never and msbd does not hold the image (Status 404)
)

// Images lists the images msbd holds, sorted by reference, with the number of
// sandboxes using each.
func (c *Client) Images(ctx context.Context) ([]ImageInfo, error) {
	var list struct {
		Items []ImageInfo `json:"items"`
	}
	if err := c.do(ctx, http.MethodGet, apiPrefix+"/images", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// PullImage makes msbd pull ref with policy (Always, IfNotPresent or Never; ""
// means IfNotPresent) and returns the image. progress, if not nil, is called as
// layers download. A failed pull is an *APIError whose Reason is ReasonPullFailed,
// ReasonInvalidImage or ReasonNotPresent. Cancelling ctx cancels the pull.
func (c *Client) PullImage(ctx context.Context, ref, policy string, progress func(PullProgress)) (ImageInfo, error) {
	body := struct {
		Ref    string `json:"ref"`
		Policy string `json:"policy,omitempty"`
	}{ref, policy}
	resp, err := c.send(ctx, http.MethodPost, apiPrefix+"/images/pull", nil, body)
	if err != nil {
		return ImageInfo{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			Progress *PullProgress `json:"progress"`
			Image    *ImageInfo    `json:"image"`
			Error    *struct {
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := dec.Decode(&line); err != nil {
			if ctx.Err() != nil {
				return ImageInfo{}, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return ImageInfo{}, fmt.Errorf("pulling %q: msbd's answer ended before the pull did: %w", ref, err)
		}
		switch {
		case line.Error != nil:
			return ImageInfo{}, &APIError{Status: pullErrorStatus(line.Error.Reason),
				Reason: line.Error.Reason, Message: line.Error.Message}
		case line.Image != nil:
			return *line.Image, nil
		case line.Progress != nil && progress != nil:
			progress(*line.Progress)
		}
	}
}

func pullErrorStatus(reason string) int {
	switch reason {
	case ReasonNotPresent:
		return http.StatusNotFound
	case ReasonInvalidImage:
		return http.StatusUnprocessableEntity
	}
	return http.StatusBadGateway
}

// RemoveImage makes msbd forget an image: the reference as written, else every
// reference with that canonical name or manifest digest. An image a Sandbox uses is
// refused (IsConflict), an unknown one is IsNotFound. Its layers stay until
// PruneImages.
func (c *Client) RemoveImage(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, apiPrefix+"/images", url.Values{"ref": {ref}}, nil, nil)
}

// PruneImages removes the blobs and unpacked layers of msbd's image store that no
// image it holds uses; a layer of an image a Sandbox uses is never removed.
func (c *Client) PruneImages(ctx context.Context) (blobs, layers int, bytes int64, err error) {
	var res struct {
		Blobs  int   `json:"blobs"`
		Layers int   `json:"layers"`
		Bytes  int64 `json:"bytes"`
	}
	if err := c.do(ctx, http.MethodPost, apiPrefix+"/images/prune", nil, nil, &res); err != nil {
		return 0, 0, 0, err
	}
	return res.Blobs, res.Layers, res.Bytes, nil
}
