package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"msb.dev/msb/apis/v1alpha1"
)

// Images lists the images msbd holds, sorted by reference, with the number of
// sandboxes using each.
func (c *Client) Images(ctx context.Context) ([]v1alpha1.ImageInfo, error) {
	var list struct {
		Items []v1alpha1.ImageInfo `json:"items"`
	}
	if err := c.do(ctx, http.MethodGet, apiPrefix+"/images", nil, nil, &list); err != nil {
		return nil, err
	}
	return list.Items, nil
}

// PullImage makes msbd pull ref with policy (Always, IfNotPresent or Never; ""
// means IfNotPresent) and returns the image. progress, if not nil, is called as
// layers download. A failed pull is an *APIError whose Reason is v1alpha1.ReasonPullFailed,
// v1alpha1.ReasonInvalidImage or v1alpha1.ReasonNotPresent. Cancelling ctx cancels the pull.
func (c *Client) PullImage(ctx context.Context, ref, policy string, progress func(v1alpha1.PullProgress)) (v1alpha1.ImageInfo, error) {
	body := struct {
		Ref    string `json:"ref"`
		Policy string `json:"policy,omitempty"`
	}{ref, policy}
	resp, err := c.send(ctx, http.MethodPost, apiPrefix+"/images/pull", nil, body)
	if err != nil {
		return v1alpha1.ImageInfo{}, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			Progress *v1alpha1.PullProgress `json:"progress"`
			Image    *v1alpha1.ImageInfo    `json:"image"`
			Error    *struct {
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := dec.Decode(&line); err != nil {
			if ctx.Err() != nil {
				return v1alpha1.ImageInfo{}, ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return v1alpha1.ImageInfo{}, fmt.Errorf("pulling %q: msbd's answer ended before the pull did: %w", ref, err)
		}
		switch {
		case line.Error != nil:
			return v1alpha1.ImageInfo{}, &APIError{Status: pullErrorStatus(line.Error.Reason),
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
	case v1alpha1.ReasonNotPresent:
		return http.StatusNotFound
	case v1alpha1.ReasonInvalidImage:
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
