"""Feedback store backends behind one async interface (`FeedbackStore`)."""
